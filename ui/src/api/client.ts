//! The API's typed client: paths and bodies come from `schema.ts`, which `npm run gen` generates
//! from the server's OpenAPI document (`flowsense openapi`), so no API type is written twice.

import createClient from 'openapi-fetch';
import type { components, paths } from './schema';

export type Schemas = components['schemas'];
export type JobView = Schemas['JobView'];
export type JobError = Schemas['JobError'];
export type GraphView = Schemas['GraphView'];
export type GraphNode = Schemas['GraphNode'];
export type GraphEdge = Schemas['GraphEdge'];
export type WorkerNode = Schemas['WorkerNode'];
export type Rows = Schemas['Rows'];
export type Column = Schemas['Column'];
export type TableView = Schemas['TableView'];
export type Health = Schemas['Health'];
export type BookLevels = Schemas['BookLevels'];
export type TapeTrade = Schemas['TapeTrade'];
export type StreamMessage = Schemas['StreamMessageDoc'];
export type Topic = Schemas['Topic'];
/** One row of a table, keyed by column name. */
export type Row = Record<string, unknown>;

export const api = createClient<paths>({ baseUrl: '' });

/** An error the API answered with: its status and its message, which names what is wrong. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The data of an openapi-fetch result, or its error message thrown as an `ApiError`. */
export function ok<T>(r: { data?: T; error?: unknown; response: Response }): T {
  if (r.error !== undefined || r.data === undefined) {
    const body = r.error as { error?: string } | undefined;
    throw new ApiError(r.response.status, body?.error ?? `${r.response.status} ${r.response.statusText}`);
  }
  return r.data;
}

/** Runs one read-only statement over the lake (`POST /api/v1/sql`). */
export async function sql(statement: string): Promise<Rows> {
  // JSON is the default answer; the CSV and Arrow forms are asked for by Accept.
  return ok(await api.POST('/api/v1/sql', { body: { sql: statement } })) as Rows;
}

/** The same statement's result as CSV text, as the server encodes it. */
export async function sqlCsv(statement: string): Promise<string> {
  const r = await fetch('/api/v1/sql', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/csv' },
    body: JSON.stringify({ sql: statement }),
  });
  if (!r.ok) throw new ApiError(r.status, ((await r.json()) as { error: string }).error);
  return r.text();
}

/** Submits a job spec as TOML (`POST /api/v1/jobs`). */
export async function submitToml(toml: string): Promise<string> {
  const r = await fetch('/api/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/toml' },
    body: toml,
  });
  const body = (await r.json()) as { id?: string; error?: string };
  if (!r.ok || !body.id) throw new ApiError(r.status, body.error ?? `${r.status}`);
  return body.id;
}

/** Quotes a string for SQL. */
export function quote(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}
