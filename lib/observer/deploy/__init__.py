"""Deployment helpers: install_vm.sh (install.sh's VM mode), the restart broker and its client, the
exposure-score table. Nothing here is imported by the programs except `observer.deploy.unitctl`."""
