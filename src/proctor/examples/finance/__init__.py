"""The finance example: a small invoices-and-payments API (:mod:`.api`) and the files
that put it behind Proctor: ``proctor.toml`` (the service and its route map),
``scope.toml`` (the task's scope) and ``policies/`` (the organisation's Cedar policies,
schema and entities)."""
