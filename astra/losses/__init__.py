"""Losses as plain functions of tensors, each tested alone against a peer or brute force.

Import them from their modules, e.g. ``from astra.losses.astra_consistency import
astra_consistency``; the model composes them, the trainer weights them.
"""
