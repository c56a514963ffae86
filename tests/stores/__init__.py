"""The provider against real object-store servers on 127.0.0.1: S3 (moto), Google Cloud Storage
(gcp-storage-emulator) and Azure Blob (Azurite). Run by ``make stores``."""
