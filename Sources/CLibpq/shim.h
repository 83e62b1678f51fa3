#ifndef NODEAGENT_CLIBPQ_SHIM_H
#define NODEAGENT_CLIBPQ_SHIM_H
/* libpq, PostgreSQL's client library: the backups reconciler holds one session open (a
   repeatable-read transaction with an exported snapshot) while pg_dump reads that snapshot.
   No shims needed: libpq has no variadic calls. */
#include <libpq-fe.h>
#endif
