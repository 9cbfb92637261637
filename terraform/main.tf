# The observer host on Azure: one Ubuntu 22.04 LTS VM (Standard_B2s, 2 vCPU / 4 GiB) in its own
# resource group, virtual network and subnet, reachable from the Internet only by SSH from admin_cidr.
# cloud-init (cloud-init.yaml) only bootstraps it: packages, time, the release checkout, install.sh.
# Runbook and first-boot checklist: docs/deployment.md, "Terraform (Azure)".

locals {
  tags = merge(
    {
      project    = "stock-trading-observer"
      component  = "observer-host"
      managed_by = "terraform"
    },
    var.tags,
  )

  # Everything cloud-init receives. Only non-secret values: custom_data is stored in the Terraform
  # state and readable from the VM's instance metadata. Changing any of them replaces the VM.
  cloud_init_vars = {
    release_repo_url = var.release_repo_url
    release_ref      = var.release_ref
  }
}

resource "azurerm_resource_group" "observer" {
  name     = var.resource_group_name
  location = var.location
  tags     = local.tags
}

resource "azurerm_virtual_network" "observer" {
  name                = "${var.vm_name}-vnet"
  location            = azurerm_resource_group.observer.location
  resource_group_name = azurerm_resource_group.observer.name
  address_space       = [var.vnet_address_space]
  tags                = local.tags
}

resource "azurerm_subnet" "observer" {
  name                 = "${var.vm_name}-snet"
  resource_group_name  = azurerm_resource_group.observer.name
  virtual_network_name = azurerm_virtual_network.observer.name
  address_prefixes     = [var.subnet_prefix]

  # The VM reaches the Internet through its own Standard public IP (outbound SNAT), not through
  # Azure's retiring implicit default outbound access.
  default_outbound_access_enabled = false
}

# Inbound: SSH from admin_cidr, and nothing else. The explicit deny at the lowest priority also shuts
# Azure's built-in AllowVnetInBound / AllowAzureLoadBalancerInBound rules (there is no load balancer
# and no other host in the network). Outbound stays Azure's default (allowed): apt, git, PyPI, the
# brokers' APIs and Telegram all need it.
resource "azurerm_network_security_group" "observer" {
  name                = "${var.vm_name}-nsg"
  location            = azurerm_resource_group.observer.location
  resource_group_name = azurerm_resource_group.observer.name
  tags                = local.tags

  security_rule {
    name                       = "allow-ssh-from-admin"
    description                = "SSH from the administrator's network only (var.admin_cidr)."
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "22"
    source_address_prefix      = var.admin_cidr
    destination_address_prefix = "VirtualNetwork"
  }

  security_rule {
    name                       = "deny-all-other-inbound"
    description                = "Everything else inbound is refused, including Azure's default VNet and load-balancer allows."
    priority                   = 4096
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = "*"
    destination_address_prefix = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "observer" {
  subnet_id                 = azurerm_subnet.observer.id
  network_security_group_id = azurerm_network_security_group.observer.id
}

resource "azurerm_public_ip" "observer" {
  name                = "${var.vm_name}-pip"
  location            = azurerm_resource_group.observer.location
  resource_group_name = azurerm_resource_group.observer.name

  # Standard SKU: closed to inbound unless an NSG allows it, and static so the address in your
  # ~/.ssh/config and the backup PC's SFTP pull (backup-pull) stays the same across reboots.
  sku               = "Standard"
  allocation_method = "Static"
  ip_version        = "IPv4"
  tags              = local.tags
}

resource "azurerm_network_interface" "observer" {
  #checkov:skip=CKV_AZURE_119:The host is reached directly by SSH (admin_cidr only, enforced by the NSG) and by the backup PC's SFTP pull; a bastion or VPN gateway would cost more than the B2s itself.
  name                = "${var.vm_name}-nic"
  location            = azurerm_resource_group.observer.location
  resource_group_name = azurerm_resource_group.observer.name
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.observer.id
    private_ip_address_allocation = "Dynamic"
    public_ip_address_id          = azurerm_public_ip.observer.id
  }
}

resource "azurerm_linux_virtual_machine" "observer" {
  name                  = var.vm_name
  computer_name         = var.vm_name
  location              = azurerm_resource_group.observer.location
  resource_group_name   = azurerm_resource_group.observer.name
  network_interface_ids = [azurerm_network_interface.observer.id]
  tags                  = local.tags

  # 2 vCPU / 4 GiB burstable: the systemd units' MemoryMax budgets (docs/deployment.md) are sized for it.
  size = "Standard_B2s"

  admin_username                  = var.admin_username
  disable_password_authentication = true

  admin_ssh_key {
    username   = var.admin_username
    public_key = trimspace(var.admin_ssh_public_key)
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "0001-com-ubuntu-server-jammy"
    sku       = "22_04-lts-gen2"
    version   = "latest"
  }

  os_disk {
    name                 = "${var.vm_name}-osdisk"
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
    disk_size_gb         = var.os_disk_size_gb
  }

  # Trusted launch (Gen2 image): secure boot and a virtual TPM.
  secure_boot_enabled        = true
  vtpm_enabled               = true
  encryption_at_host_enabled = var.encryption_at_host_enabled

  # The Azure guest agent reports provisioning; VM extensions are not used (cloud-init does the
  # bootstrap) and stay off, so nobody can push code onto the host through the extension API.
  # Recovery without SSH: the serial console, which the boot diagnostics below enable.
  provision_vm_agent         = true
  allow_extension_operations = false

  # Boot diagnostics in an Azure-managed storage account (no storage account of ours to secure).
  boot_diagnostics {}

  # Bootstrap only (cloud-init.yaml). Changing the rendered text REPLACES the VM: keep it small and
  # stable, and never put a secret in it.
  custom_data = base64encode(templatefile("${path.module}/cloud-init.yaml", local.cloud_init_vars))

  depends_on = [azurerm_subnet_network_security_group_association.observer]
}
