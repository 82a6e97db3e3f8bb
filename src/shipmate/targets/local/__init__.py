"""The local target: services as supervised processes, addons from the machine's own binaries,
and a router in front of each service. Everything here does real I/O on this machine."""
