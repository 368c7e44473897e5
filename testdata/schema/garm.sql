-- The tables of changecast's built-in domain (GARM's runner fleet) as
-- PostgreSQL sees them after store.DB.Migrate with entities.DefaultRegistry.
-- Rendered from the catalogs by TestMigrate_SchemaGolden (store/schema_test.go);
-- do not edit: go test ./store -run TestMigrate_SchemaGolden -update rewrites it.
-- changecast's own schema (changecast.*) is not part of the domain and is left out.

CREATE TABLE public.controllers (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    hostname text DEFAULT ''::text NOT NULL,
    callback_url text DEFAULT ''::text NOT NULL,
    metadata_url text DEFAULT ''::text NOT NULL,
    webhook_url text DEFAULT ''::text NOT NULL,
    minimum_job_age_backoff bigint DEFAULT 30 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT controllers_pkey PRIMARY KEY (id)
);
ALTER TABLE public.controllers REPLICA IDENTITY FULL;

CREATE TABLE public.enterprises (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    credentials_id uuid,
    webhook_secret text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT enterprises_pkey PRIMARY KEY (id)
);
ALTER TABLE public.enterprises REPLICA IDENTITY FULL;

CREATE TABLE public.file_objects (
    id bigint DEFAULT nextval('file_objects_id_seq'::regclass) NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    file_type text DEFAULT ''::text NOT NULL,
    size bigint DEFAULT 0 NOT NULL,
    sha256 text DEFAULT ''::text NOT NULL,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    content bytea,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT file_objects_pkey PRIMARY KEY (id)
);
ALTER TABLE public.file_objects REPLICA IDENTITY FULL;

CREATE TABLE public.forge_instances (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    endpoint_name text DEFAULT ''::text NOT NULL,
    gitea_credentials_id uuid,
    pool_manager_running boolean DEFAULT false NOT NULL,
    pool_manager_failure_reason text DEFAULT ''::text NOT NULL,
    pool_balancer_type text DEFAULT 'roundrobin'::text NOT NULL,
    agent_mode boolean DEFAULT false NOT NULL,
    webhook_secret text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT forge_instances_pkey PRIMARY KEY (id)
);
ALTER TABLE public.forge_instances REPLICA IDENTITY FULL;

CREATE TABLE public.gitea_credentials (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    auth_type text DEFAULT 'pat'::text NOT NULL,
    endpoint_name text DEFAULT ''::text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT gitea_credentials_pkey PRIMARY KEY (id)
);
ALTER TABLE public.gitea_credentials REPLICA IDENTITY FULL;

CREATE TABLE public.github_credentials (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    auth_type text DEFAULT 'pat'::text NOT NULL,
    endpoint_name text DEFAULT 'github.com'::text NOT NULL,
    payload jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT github_credentials_pkey PRIMARY KEY (id)
);
ALTER TABLE public.github_credentials REPLICA IDENTITY FULL;

CREATE TABLE public.github_endpoints (
    name text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    api_base_url text DEFAULT ''::text NOT NULL,
    upload_base_url text DEFAULT ''::text NOT NULL,
    base_url text DEFAULT ''::text NOT NULL,
    ca_cert_bundle bytea,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT github_endpoints_pkey PRIMARY KEY (name)
);
ALTER TABLE public.github_endpoints REPLICA IDENTITY FULL;

CREATE TABLE public.instances (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    agent_id bigint DEFAULT 0 NOT NULL,
    provider_id text DEFAULT ''::text NOT NULL,
    os_type text DEFAULT 'linux'::text NOT NULL,
    os_arch text DEFAULT 'amd64'::text NOT NULL,
    addresses jsonb DEFAULT '[]'::jsonb NOT NULL,
    status text DEFAULT 'pending_create'::text NOT NULL,
    runner_status text DEFAULT 'pending'::text NOT NULL,
    pool_id uuid,
    callback_url text DEFAULT ''::text NOT NULL,
    create_attempt bigint DEFAULT 0 NOT NULL,
    token_fetched boolean DEFAULT false NOT NULL,
    jit_configuration text DEFAULT ''::text NOT NULL,
    callback_token text DEFAULT ''::text NOT NULL,
    github_runner_group text DEFAULT ''::text NOT NULL,
    heartbeat timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT instances_pkey PRIMARY KEY (id)
);
ALTER TABLE public.instances REPLICA IDENTITY FULL;

CREATE TABLE public.jobs (
    id bigint NOT NULL,
    run_id bigint DEFAULT 0 NOT NULL,
    action text DEFAULT ''::text NOT NULL,
    status text DEFAULT 'queued'::text NOT NULL,
    conclusion text DEFAULT ''::text NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    runner_name text DEFAULT ''::text NOT NULL,
    repository_owner text DEFAULT ''::text NOT NULL,
    repository_name text DEFAULT ''::text NOT NULL,
    labels text[] DEFAULT '{}'::text[] NOT NULL,
    duration_seconds numeric(12,3),
    locked_by uuid,
    started_at timestamp with time zone,
    completed_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT jobs_pkey PRIMARY KEY (id)
);
ALTER TABLE public.jobs REPLICA IDENTITY FULL;

CREATE TABLE public.organizations (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    credentials_id uuid,
    pool_balancer_type text DEFAULT 'roundrobin'::text NOT NULL,
    webhook_secret text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT organizations_pkey PRIMARY KEY (id)
);
ALTER TABLE public.organizations REPLICA IDENTITY FULL;

CREATE TABLE public.pools (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    provider_name text DEFAULT ''::text NOT NULL,
    runner_prefix text DEFAULT 'garm'::text NOT NULL,
    max_runners bigint DEFAULT 0 NOT NULL,
    min_idle_runners bigint DEFAULT 0 NOT NULL,
    image text DEFAULT ''::text NOT NULL,
    flavor text DEFAULT ''::text NOT NULL,
    os_type text DEFAULT 'linux'::text NOT NULL,
    os_arch text DEFAULT 'amd64'::text NOT NULL,
    tags text[] DEFAULT '{}'::text[] NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    runner_bootstrap_timeout bigint DEFAULT 20 NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    cost_per_hour numeric(12,4) DEFAULT '0'::numeric NOT NULL,
    extra_specs jsonb DEFAULT '{}'::jsonb NOT NULL,
    repo_id uuid,
    org_id uuid,
    enterprise_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT pools_pkey PRIMARY KEY (id)
);
ALTER TABLE public.pools REPLICA IDENTITY FULL;

CREATE TABLE public.proxies (
    id bigint DEFAULT nextval('proxies_id_seq'::regclass) NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    http_proxy text DEFAULT ''::text NOT NULL,
    https_proxy text DEFAULT ''::text NOT NULL,
    no_proxy text DEFAULT ''::text NOT NULL,
    credentials jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT proxies_pkey PRIMARY KEY (id)
);
ALTER TABLE public.proxies REPLICA IDENTITY FULL;

CREATE TABLE public.repositories (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    owner text DEFAULT ''::text NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    credentials_id uuid,
    pool_balancer_type text DEFAULT 'roundrobin'::text NOT NULL,
    webhook_secret text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT repositories_pkey PRIMARY KEY (id)
);
ALTER TABLE public.repositories REPLICA IDENTITY FULL;

CREATE TABLE public.scalesets (
    id bigint DEFAULT nextval('scalesets_id_seq'::regclass) NOT NULL,
    scale_set_id bigint DEFAULT 0 NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    extended_state text DEFAULT ''::text NOT NULL,
    provider_name text DEFAULT ''::text NOT NULL,
    runner_prefix text DEFAULT 'garm'::text NOT NULL,
    max_runners bigint DEFAULT 0 NOT NULL,
    min_idle_runners bigint DEFAULT 0 NOT NULL,
    desired_runner_count bigint DEFAULT 0 NOT NULL,
    runner_bootstrap_timeout bigint DEFAULT 20 NOT NULL,
    image text DEFAULT ''::text NOT NULL,
    flavor text DEFAULT ''::text NOT NULL,
    os_type text DEFAULT 'linux'::text NOT NULL,
    os_arch text DEFAULT 'amd64'::text NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    disable_update boolean DEFAULT false NOT NULL,
    last_message_id bigint DEFAULT 0 NOT NULL,
    extra_specs jsonb DEFAULT '{}'::jsonb NOT NULL,
    github_runner_group text DEFAULT ''::text NOT NULL,
    repo_id uuid,
    org_id uuid,
    enterprise_id uuid,
    template_id bigint,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT scalesets_pkey PRIMARY KEY (id)
);
ALTER TABLE public.scalesets REPLICA IDENTITY FULL;

CREATE TABLE public.templates (
    id bigint DEFAULT nextval('templates_id_seq'::regclass) NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    os_type text DEFAULT 'linux'::text NOT NULL,
    forge_type text DEFAULT 'github'::text NOT NULL,
    data text DEFAULT ''::text NOT NULL,
    user_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT templates_pkey PRIMARY KEY (id)
);
ALTER TABLE public.templates REPLICA IDENTITY FULL;

CREATE TABLE public.users (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    username text NOT NULL,
    email text DEFAULT ''::text NOT NULL,
    full_name text DEFAULT ''::text NOT NULL,
    password text DEFAULT ''::text NOT NULL,
    generation bigint DEFAULT 0 NOT NULL,
    is_admin boolean DEFAULT false NOT NULL,
    enabled boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX idx_users_username ON public.users USING btree (username);
ALTER TABLE public.users REPLICA IDENTITY FULL;
