"""sslzoo.pretext."""
