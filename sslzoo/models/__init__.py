"""sslzoo.models."""
