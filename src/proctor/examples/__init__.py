"""Example upstream services and scenarios that install with Proctor, so that
``proctor demo`` runs from an installed package."""
