"""Commerce NDJSON batches (customers, products, orders, order_items) loaded in foreign-key order."""
