-- Demo sources and destinations, for scripts/demo and compose.yaml. Run as the
-- database's owner: configuration rows are not ordersync_runtime's to write.
-- psql variables: inventory_url, invoicing_url, shipping_url (push destinations),
-- The secrets are demo values: never use them for a real shop.
\set ON_ERROR_STOP on
INSERT INTO sources (id, kind, secret) VALUES
    ('shop', 'shopify', 'shpss_demo_secret_0123456789'),
    ('woo', 'woocommerce', 'woo-demo-secret'),
    ('stripe', 'stripe', 'whsec_stripe_demo_secret_987654321'),
    ('erp', 'standard', 'whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQ=')
ON CONFLICT (id) DO NOTHING;

INSERT INTO destinations (id, url, secret, retry_schedule, max_attempts) VALUES
    ('inventory', :'inventory_url', 'whsec_ZGVtby1kZXN0aW5hdGlvbi1zZWNyZXQtMDEyMw==',
     '{1 second,5 seconds,30 seconds,2 minutes,10 minutes}', 20),
    ('invoicing', :'invoicing_url', 'whsec_ZGVtby1kZXN0aW5hdGlvbi1zZWNyZXQtMDEyMw==',
     '{1 second,5 seconds,30 seconds,2 minutes,10 minutes}', 20),
    ('shipping', :'shipping_url', 'whsec_ZGVtby1kZXN0aW5hdGlvbi1zZWNyZXQtMDEyMw==',
     '{1 second,5 seconds,30 seconds,2 minutes,10 minutes}', 20)
ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url;
