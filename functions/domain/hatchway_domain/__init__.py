"""Scheduled jobs that keep a custom domain right: Cloudflare DNS records and TLS certificates."""
