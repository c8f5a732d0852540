"""consortium_operator: kopf handlers reconciling Consortium and Member resources.

Built in the operator issue; this package exists so the distribution has its final shape.
"""
