"""OPC UA driver. asyncua is imported only when an OPC UA device is configured."""
