-- SPDX-License-Identifier: GPL-2.0-or-later
-- The ledger's clock, part of schema 11 on PostgreSQL: applied after 011_schema.sql to
-- a new ledger, and by `asbb-admin migrate` to a ledger made before the clock was (one
-- whose `ledger_clock` is missing). A table added by a later migration needs its own
-- `<table>_moves_clock` trigger.

-- The ledger's clock: a count that every transaction writing the ledger moves on by
-- exactly one. A plugin whose cached reads were true at a known count decides from
-- them, and sends its writes in one round trip that first checks, under the write
-- lock, that the count has not moved since (`ledger_clock_check`): a decision in one
-- round trip that is still serial with every other writer's.
CREATE TABLE ledger_clock (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  BIGINT  NOT NULL,
    -- The transaction that moved it last (each moves it once, however many statements).
    moved_by    BIGINT  NOT NULL
);
INSERT INTO ledger_clock (id, generation, moved_by) VALUES (1, 0, 0);

CREATE FUNCTION ledger_clock_tick() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_clock SET generation = generation + 1, moved_by = txid_current()
     WHERE id = 1 AND moved_by <> txid_current();
    RETURN NULL;
END
$$;

-- Every statement that writes any table of the ledger moves the clock.
DO $$
DECLARE
    t TEXT;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables
              WHERE schemaname = current_schema() AND tablename NOT IN ('ledger_clock', 'schema_migrations')
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION ledger_clock_tick()', t || '_moves_clock', t);
    END LOOP;
END
$$;

-- The ledger's write lock (an advisory lock, "asbb" in ASCII), taken by every writer;
-- the clock as it reads once the lock is held (each statement of a function sees what
-- was committed before it began).
CREATE FUNCTION ledger_write_lock() RETURNS BIGINT LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1634951778);
    RETURN (SELECT generation FROM ledger_clock WHERE id = 1);
END
$$;

-- Takes the write lock; fails, so that the transaction writes nothing, if the clock
-- has moved from `expected`.
CREATE FUNCTION ledger_clock_check(expected BIGINT) RETURNS BIGINT LANGUAGE plpgsql AS $$
BEGIN
    -- Moved already: fail at once, not after waiting for the lock behind the writer
    -- that moved it.
    IF (SELECT generation FROM ledger_clock WHERE id = 1) <> expected THEN
        RAISE EXCEPTION 'asbb: the ledger changed since this connection read it'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF ledger_write_lock() <> expected THEN
        RAISE EXCEPTION 'asbb: the ledger changed since this connection read it'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN expected;
END
$$;
