"""sslzoo.downstream."""
