"""SFTP users and locations reports, discovered by sensors and upserted into `crm.users` / `crm.locations`."""
