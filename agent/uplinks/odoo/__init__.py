"""The Odoo connector: plant events become Odoo records, exactly once."""
