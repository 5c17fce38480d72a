"""stress: workloads that drive allocators hard and report what they saw.

``python -m stress`` runs the default campaign; ``python -m stress --help``
lists the commands.
"""
