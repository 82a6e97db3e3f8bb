"""AppSpec x environment -> Plan: frozen, deterministic, every default resolved."""
