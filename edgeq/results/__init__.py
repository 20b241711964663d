"""Typed results of ``edgeq validate`` and ``edgeq build``: frozen dataclasses, one per thing a report proves.

``validate`` returns an :class:`edgeq.results.validation.ValidationReport`, the build pipeline an
:class:`edgeq.results.build.BuildReport` that contains it, and the report renders these types. Each type's
``to_document()`` is the JSON that report.json, validation.json and the bench cache hold (field order is
key order), and ``from_document()`` reads it back strictly (:mod:`edgeq.results.document`).

This package imports only :mod:`edgeq.artifacts` and :mod:`edgeq.errors`: validate, build, the report and
the CLI all use it, and it must not tie them together.
"""
