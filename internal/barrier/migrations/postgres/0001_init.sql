-- The barrier's root key, wrapped by the unseal key. At most one row.
CREATE TABLE barrier_root (
	id          SMALLINT PRIMARY KEY CHECK (id = 1),
	set_id      BYTEA   NOT NULL,  -- random per Init; named in shares and key files
	shares      INTEGER NOT NULL,
	threshold   INTEGER NOT NULL,
	root_key_ct BYTEA   NOT NULL,  -- nonce || AES-256-GCM(unseal key, root key)
	created_at  BIGINT  NOT NULL
);

-- Data-encryption keys, wrapped by the root key. The highest version is current.
CREATE TABLE barrier_keys (
	version    BIGINT PRIMARY KEY CHECK (version BETWEEN 1 AND 4294967295),
	key_ct     BYTEA  NOT NULL,    -- nonce || AES-256-GCM(root key, data key)
	created_at BIGINT NOT NULL
);
