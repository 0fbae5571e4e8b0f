"""Evaluation: BOP I/O and metrics, COCO OKS/AP, retargeting metrics, benchmarks."""
