"""pvesim: a Proxmox VE API simulator with a small real container runtime."""

__version__ = "0.1.0"
