"""sslzoo.serving."""
