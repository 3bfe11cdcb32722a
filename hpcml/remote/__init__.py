"""Running hpcml commands on a cluster from a laptop, over one SSH connection.

`settings` parses the `[remotes.NAME]` tables of the configuration and resolves them with
`~/.ssh/config`; `hpcml.clients.ssh` opens the connection (strict host keys, ProxyJump) and
runs commands through it behind the `Runner` protocol; `sync` mirrors the workflow directory
over SFTP; `commands` maps a local command line onto the remote one; `session` drives a
command on the cluster (sync, secrets, the remote `hpcml`, watching with reconnects).
See docs/remote.md for the design and why `hpcml` runs on the cluster side.
"""
