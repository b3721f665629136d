"""The RQ job and its five provisioning phases."""
