"""A spool that fails as on a full disk, for the services that must keep going through one."""

from __future__ import annotations

from service_io.spool import Spool, SpoolError


class DeleteRefusingSpool(Spool):
    """The real spool, whose deletes fail as on a full disk while `full` is set (writes of new items still work:
    on a real full disk SQLite took the state write and then refused the delete, a helper saw)."""

    full = False

    def delete(self, ids: list[int]) -> None:
        if self.full and ids:
            raise SpoolError(f"spool {self.path}: cannot delete: database or disk is full")
        super().delete(ids)
