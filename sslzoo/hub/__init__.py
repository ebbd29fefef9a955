"""sslzoo.hub."""
