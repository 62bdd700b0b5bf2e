-- Files (uploads and produced outputs) and shared state (small JSON documents workers update atomically).

-- bytea stored EXTERNAL (out of line, uncompressed): substring() then reads only the TOAST chunks it
-- needs, so a file is streamed out in chunks. Outputs are JSONL, which compresses well, but streaming
-- a large file matters more than its size on disk.
CREATE TABLE files (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         text NOT NULL UNIQUE,
    tenant     text NOT NULL,
    purpose    text NOT NULL,
    filename   text NOT NULL,
    bytes      bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    meta       jsonb NOT NULL DEFAULT '{}',
    content    bytea NOT NULL
);
ALTER TABLE files ALTER COLUMN content SET STORAGE EXTERNAL;
CREATE INDEX files_tenant ON files (tenant, pk);

CREATE TABLE shared_state (
    key        text PRIMARY KEY,
    value      jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
