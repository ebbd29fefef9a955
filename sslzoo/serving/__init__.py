"""Serving: framework-neutral services (decode → validate → run → encode) behind TorchServe and ``sslzoo predict``.

- :mod:`sslzoo.serving.decode`: request bytes → image / label map; the pixel limit is checked on the header.
- :mod:`sslzoo.serving.encode`: label map → PNG, JSON summary, GeoJSON (QuPath-importable).
- :mod:`sslzoo.serving.schemas`: pydantic request/response/error models.
- :mod:`sslzoo.serving.services`: segmentation, embedding and evaluation services.
- :mod:`sslzoo.serving.adapter`: TorchServe request/context ↔ services (what ``handlers/*.py`` call).
- :mod:`sslzoo.serving.modelstore` / :mod:`sslzoo.serving.server`: build the model store, run TorchServe.

Using the REST API (CONTRACTS.md section 2; ``KEY`` = ``"inference"`` key of ``WORKDIR/key_file.json``)::

    sslzoo serve --models nuclei=runs/nuclei lesion=runs/lesion embed=runs/encoder evaluate --workdir serve
    KEY=$(python -c "import json; print(json.load(open('serve/key_file.json'))['inference']['key'])")
    curl -H "Authorization: Bearer $KEY" -H 'Content-Type: image/png' --data-binary @tile.png \\
         http://127.0.0.1:8080/predictions/nuclei -o labels.png                       # 16-bit label map
    curl -H "Authorization: Bearer $KEY" -H 'Accept: application/geo+json' -F image=@tile.png \\
         http://127.0.0.1:8080/predictions/nuclei -o nuclei.geojson                   # QuPath: File > Import
    curl -H "Authorization: Bearer $KEY" -F task=instance -F prediction_1=@pred.png -F mask_1=@gt.png \\
         http://127.0.0.1:8080/predictions/evaluate

Always send a Content-Type with a binary body: TorchServe's frontend answers a binary body sent as
``application/x-www-form-urlencoded`` (curl's default for ``--data-binary``) with a 500 before any
handler runs. Errors are ``{"code", "type", "message"}`` with 400 / 404 / 413.
"""
