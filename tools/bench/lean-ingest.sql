-- A yardstick, not a schema: the least database work one order needs for what
-- ordersync does with it, written as lean, set-based SQL (the raw payload kept
-- once as text with its dedupe key, the order upserted with its document, one
-- event carrying the envelope, one narrow delivery-state row per destination,
-- 3 here). scripts/bench runs it with pgbench beside ingest_batch(), in the
-- same run, so ordersync's SQL is held against it on the same machine at the
-- same moment. Everything lives in the schema `lean`, dropped afterwards.
create schema lean;
set search_path = lean;
create table inbound (id bigint generated always as identity primary key, source text not null,
  dedupe_key text not null, payload text not null, order_id bigint,
  received_at timestamptz not null default now(), unique (source, dedupe_key));
alter table inbound alter column payload set compression lz4;
create table orders (id bigint generated always as identity primary key, source text not null,
  external_id text not null, doc jsonb not null, status text, updated_at timestamptz not null,
  unique (source, external_id));
alter table orders alter column doc set compression lz4;
create table events (id bigint generated always as identity primary key, order_id bigint not null,
  type text not null, payload jsonb not null, created_at timestamptz not null default now());
alter table events alter column payload set compression lz4;
create table deliveries (event_id bigint not null, dest smallint not null,
  state smallint not null default 0, attempts smallint not null default 0,
  next_at timestamptz not null default now(), lease_until timestamptz,
  primary key (dest, event_id)) with (fillfactor = 70);
create index deliveries_due on deliveries (dest, next_at) where state = 0;
create function ingest(batch jsonb) returns integer language sql set search_path = lean as $$
  with el as (select a.value as e, a.ord from jsonb_array_elements(batch) with ordinality a(value, ord)),
  o as (insert into orders (source, external_id, doc, status, updated_at)
        select e->>'s', e->'o'->>'external_id', e->'o', e->'o'->>'status',
               (e->'o'->>'updated_at')::timestamptz from el order by ord
        on conflict (source, external_id) do update set doc = excluded.doc, updated_at = excluded.updated_at
          where orders.updated_at <= excluded.updated_at
        returning id, external_id, doc),
  i as (insert into inbound (source, dedupe_key, payload, order_id)
        select el.e->>'s', el.e->>'k', (el.e->'p')::text, o.id
          from el join o on o.external_id = el.e->'o'->>'external_id'
        on conflict do nothing returning order_id),
  ev as (insert into events (order_id, type, payload)
         select o.id, 'order.created',
                jsonb_build_object('type', 'order.created', 'timestamp', now(), 'data', o.doc) from o
         returning id),
  d as (insert into deliveries (event_id, dest) select ev.id, g from ev, generate_series(1, 3) g
        returning 1)
  select count(*)::int from d
$$;
