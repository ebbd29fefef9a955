"""sslzoo.data."""
