output "public_ip_address" {
  description = "Static public IPv4 address of the observer host (SSH is reachable only from admin_cidr)."
  value       = azurerm_public_ip.observer.ip_address
}

output "ssh_command" {
  description = "How to log in (first-boot checklist in docs/deployment.md)."
  value       = "ssh ${var.admin_username}@${azurerm_public_ip.observer.ip_address}"
}

output "vm_id" {
  description = "Azure resource ID of the VM."
  value       = azurerm_linux_virtual_machine.observer.id
}

output "private_ip_address" {
  description = "The VM's address inside the virtual network."
  value       = azurerm_network_interface.observer.private_ip_address
}

output "resource_group_name" {
  description = "Resource group holding the host (delete it to remove everything)."
  value       = azurerm_resource_group.observer.name
}
