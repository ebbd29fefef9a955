"""sslzoo.metrics."""
