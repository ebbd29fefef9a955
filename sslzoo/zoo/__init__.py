"""The zoo build (layer 5, a peer of study and serving): every method x dataset encoder pretrained, measured
(NQC and a frozen-encoder few-label probe against random init), carded, packaged, put on a leaderboard and
published — ``sslzoo zoo build`` / ``sslzoo zoo publish``.

This folder also holds the embedded default models (``sslzoo/zoo/<entry>/``, see :mod:`sslzoo.hub.defaults`);
the modules here are the build. Only ``sslzoo.cli`` imports this package.
"""
