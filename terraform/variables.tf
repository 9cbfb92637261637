# Inputs of the observer host. Nothing here is a secret, and no default may ever become one:
# every value ends up in the Terraform state, and the ones passed to cloud-init also in the VM's
# custom_data. Broker keys and the Telegram token go to /etc/observer/secrets.env on the host by hand
# after first boot (docs/deployment.md, "First-boot checklist").
#
# The validation conditions below use a deliberately small set of functions (can, try, cidrhost,
# cidrsubnet, split, tonumber, strcontains, regex, contains, trimspace, length): the tests evaluate
# them in Python (tests/deploy/test_terraform.py) and refuse any function they do not model.

variable "subscription_id" {
  description = "Azure subscription to deploy into. null = take it from ARM_SUBSCRIPTION_ID (azurerm 4.x needs one of the two)."
  type        = string
  default     = null
}

variable "location" {
  description = "Azure region. Korea Central keeps the round trip to the brokers' Seoul endpoints short."
  type        = string
  default     = "koreacentral"
}

variable "resource_group_name" {
  description = "Resource group that holds everything this configuration creates."
  type        = string
  default     = "rg-stock-observer"

  validation {
    condition     = can(regex("^[A-Za-z0-9._()-]{1,89}[A-Za-z0-9_()-]$", var.resource_group_name))
    error_message = "resource_group_name: 2-90 characters of letters, digits, . _ - ( ), not ending in a period."
  }
}

variable "vm_name" {
  description = "Name of the VM; also its host name (computer_name)."
  type        = string
  default     = "observer-01"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$", var.vm_name))
    error_message = "vm_name: 2-64 characters of lower-case letters, digits and '-', not starting or ending with '-' (it is the Linux host name)."
  }
}

variable "admin_username" {
  description = "Login of the administrator account (SSH key only; passwords are disabled)."
  type        = string
  default     = "observeradmin"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.admin_username)) && !contains(["root", "admin", "administrator", "user", "guest", "test", "observer"], var.admin_username)
    error_message = "admin_username: a lower-case Linux login (at most 32 characters), not one Azure reserves (root, admin, administrator, user, guest, test) and not 'observer' (the service account install.sh creates)."
  }
}

variable "admin_ssh_public_key" {
  description = "The administrator's SSH PUBLIC key, one line (ssh-rsa or ssh-ed25519), e.g. the contents of ~/.ssh/id_ed25519.pub."
  type        = string
  # No default: there is no sensible one, and a private key must never be pasted here.

  validation {
    condition     = can(regex("^(ssh-rsa|ssh-ed25519) [A-Za-z0-9+/]+={0,3}( .*)?$", trimspace(var.admin_ssh_public_key)))
    error_message = "admin_ssh_public_key: one public key line starting with ssh-rsa or ssh-ed25519 (the .pub file), never a private key."
  }
}

variable "admin_cidr" {
  description = "The only source allowed to reach SSH (port 22): your own address, e.g. 203.0.113.7/32. IPv4 prefixes shorter than /16 and IPv6 prefixes shorter than /48 are refused, and so are 0.0.0.0/0, ::/0 and service tags such as Internet or *."
  type        = string
  # No default: the operator must say where they connect from.

  validation {
    condition     = can(cidrhost(var.admin_cidr, 0))
    error_message = "admin_cidr: must be an address range in CIDR notation, e.g. 203.0.113.7/32 (a single address needs /32)."
  }

  validation {
    condition     = try(tonumber(split("/", var.admin_cidr)[1]) >= (strcontains(var.admin_cidr, ":") ? 48 : 16), false)
    error_message = "admin_cidr: too wide. SSH must not be open to the Internet: use at most a /16 for IPv4 (better your own /32) and at most a /48 for IPv6; 0.0.0.0/0 and ::/0 are refused."
  }

  validation {
    condition     = try(cidrsubnet(var.admin_cidr, 0, 0) == var.admin_cidr, false)
    error_message = "admin_cidr: write the network address with no host bits set (e.g. 198.51.100.0/24, not 198.51.100.9/24)."
  }
}

variable "vnet_address_space" {
  description = "Address space of the virtual network."
  type        = string
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.vnet_address_space, 0))
    error_message = "vnet_address_space: must be a CIDR range."
  }
}

variable "subnet_prefix" {
  description = "Address prefix of the VM's subnet (inside vnet_address_space)."
  type        = string
  default     = "10.42.0.0/27"

  validation {
    condition     = can(cidrhost(var.subnet_prefix, 0))
    error_message = "subnet_prefix: must be a CIDR range."
  }
}

variable "os_disk_size_gb" {
  description = "Size of the Premium SSD OS disk in GB. It holds the data tree (/var/lib/observer) too; retention keeps 3-10 days of it."
  type        = number
  default     = 128

  validation {
    condition     = var.os_disk_size_gb >= 64 && var.os_disk_size_gb <= 1024
    error_message = "os_disk_size_gb: between 64 and 1024."
  }
}

variable "encryption_at_host_enabled" {
  description = "Encrypt the VM's temp disk and disk caches on the host. Needs the subscription feature Microsoft.Compute/EncryptionAtHost registered once (docs/deployment.md)."
  type        = bool
  default     = true
}

variable "release_repo_url" {
  description = "HTTPS URL of the git repository cloud-init clones the release from on first boot. Must be cloneable without credentials (a public repository or a mirror you control); leave empty to copy the release onto the host yourself."
  type        = string
  default     = ""

  validation {
    # No user-info part (nothing like https://user:token@host/...): a credential here would be stored in
    # the state and in custom_data, readable from the VM's metadata.
    condition     = var.release_repo_url == "" || can(regex("^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)+/?$", var.release_repo_url))
    error_message = "release_repo_url: empty, or a plain https:// URL without credentials, query or fragment (e.g. https://github.com/OWNER/stock-trading-observer.git)."
  }
}

variable "release_ref" {
  description = "Tag, branch or full commit SHA of the release to check out (a tag is best: it pins what the VM runs)."
  type        = string
  default     = "main"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$", var.release_ref)) && !strcontains(var.release_ref, "..")
    error_message = "release_ref: a git tag, branch or commit SHA made of letters, digits and . _ / - (no '..')."
  }
}

variable "tags" {
  description = "Extra tags for every resource (merged over the project's own tags)."
  type        = map(string)
  default     = {}
}
