"""Deployment helpers: install_vm.sh (install.sh's VM mode), the restart broker (unitctl.sh; its client is
observer.heal.unitctl), the exposure-score table. Install-time only: no module of observer imports this package."""
