# Terraform and provider versions. The provider is pinned exactly so that `terraform init` on any
# machine gets the provider this configuration was written and reviewed against; bump it on purpose
# (edit the version, `terraform init -upgrade`, read the plan) rather than by accident.
terraform {
  # 1.5: strcontains() in the variables' validation blocks.
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "= 4.57.0"
    }
  }
}

provider "azurerm" {
  features {}

  # null falls back to the ARM_SUBSCRIPTION_ID environment variable.
  subscription_id = var.subscription_id
}
