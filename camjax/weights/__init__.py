"""Pretrained weights: a torch-free checkpoint reader and key maps into camjax models."""
