-- An application's own schema, which no built-in entity type knows, for
-- "changecast inspect" (store.DB.Inspect and cmd/changecast's golden).
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    api_key text,
    password_hash bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    total numeric(12,2) NOT NULL,
    status text NOT NULL,
    tags text[],
    details jsonb,
    receipt bytea,
    placed_at timestamptz NOT NULL
);

CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders (id),
    line int NOT NULL,
    sku text NOT NULL,
    quantity int NOT NULL,
    PRIMARY KEY (order_id, line)
);

-- Integers only: nothing TOAST-able, so no replica_identity suggestion.
CREATE TABLE categories (
    id int PRIMARY KEY,
    parent_id int
);

-- No primary key, identity DEFAULT: UPDATE and DELETE would fail once
-- published.
CREATE TABLE audit_log (
    at timestamptz NOT NULL,
    message text
);

-- Keyless but FULL: changes flow, but nothing identifies an entity.
CREATE TABLE page_views (
    path text NOT NULL,
    viewed_at timestamptz NOT NULL
);
ALTER TABLE page_views REPLICA IDENTITY FULL;

-- A unique index on NOT NULL columns as the identity.
CREATE TABLE addresses (
    street text NOT NULL,
    city text NOT NULL,
    CONSTRAINT addresses_street_city UNIQUE (street, city)
);
ALTER TABLE addresses REPLICA IDENTITY USING INDEX addresses_street_city;

CREATE TABLE measurements (
    id bigint NOT NULL,
    taken_on date NOT NULL,
    value double precision,
    PRIMARY KEY (id, taken_on)
) PARTITION BY RANGE (taken_on);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');

CREATE SCHEMA archive;
CREATE TABLE archive.orders (
    id bigint PRIMARY KEY,
    archived_at timestamptz NOT NULL
);
CREATE TABLE archive.statuses (
    code text PRIMARY KEY,
    label text
);
