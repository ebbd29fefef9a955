"""Serving: framework-neutral services (decode → validate → run → encode) behind TorchServe and ``sslzoo predict``.

- :mod:`sslzoo.serving.decode`: request bytes → image / label map; the pixel limit is checked on the header.
- :mod:`sslzoo.serving.encode`: label map → PNG, JSON summary, GeoJSON (QuPath-importable).
- :mod:`sslzoo.serving.schemas`: pydantic request/response/error models.
- :mod:`sslzoo.serving.services`: segmentation, embedding and evaluation services.
- :mod:`sslzoo.serving.ranking`: the encoder-ranking service (``POST /predictions/rank``).
- :mod:`sslzoo.serving.adapter`: TorchServe request/context ↔ services (what ``handlers/*.py`` call).
- :mod:`sslzoo.serving.limits`: work limits per request (413 naming the limit).
- :mod:`sslzoo.serving.auth` / :mod:`sslzoo.serving.front`: API keys; the Starlette/uvicorn front.
- :mod:`sslzoo.serving.modelstore` / :mod:`sslzoo.serving.server`: build the model store, run front + TorchServe.

Using the REST API (CONTRACTS.md section 2; ``KEY`` = a line of the API key file)::

    sslzoo serve --models nuclei=runs/nuclei lesion=runs/lesion embed=runs/encoder evaluate --api-keys keys.txt
    KEY=$(head -1 keys.txt)
    curl -H "Authorization: Bearer $KEY" -H 'Content-Type: image/png' --data-binary @tile.png \\
         http://127.0.0.1:8080/predictions/nuclei -o labels.png                       # 16-bit label map
    curl -H "Authorization: Bearer $KEY" -H 'Accept: application/geo+json' -F image=@tile.png \\
         http://127.0.0.1:8080/predictions/nuclei -o nuclei.geojson                   # QuPath: File > Import
    curl -H "Authorization: Bearer $KEY" -F task=instance -F prediction_1=@pred.png -F mask_1=@gt.png \\
         http://127.0.0.1:8080/predictions/evaluate
    curl -H "Authorization: Bearer $KEY" -F task=instance -F image_1=@a.png -F mask_1=@a_gt.png ... \\
         http://127.0.0.1:8080/predictions/rank                                        # which encoder?

A binary body sent as ``application/x-www-form-urlencoded`` (curl's default for ``--data-binary``)
is passed on as ``application/octet-stream`` by the front. Errors are ``{"code", "type", "message"}``
with 400 / 401 / 404 / 413.
"""
