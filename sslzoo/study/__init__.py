"""sslzoo.study."""
