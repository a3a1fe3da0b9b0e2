"""Rollback guard rules shared by the central metrics consumer and each replica's fast path.

Import from the modules (`guard.judge`, `guard.policy`, `guard.verdict`, `guard.local`): this
package file stays empty so that `guard.exceptions` (which the CLI's exit codes need) does not
pull in the numpy metrics core at start-up.
"""
