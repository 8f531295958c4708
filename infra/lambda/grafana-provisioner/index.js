// The CloudFormation custom resource that provisions Amazon Managed Grafana (observability.ts,
// grafana.ts): the Prometheus data source on the AMP workspace, the folder "Tributary", and one
// dashboard of deploy/monitoring/grafana/dashboards per resource. CloudFormation cannot create
// Grafana data sources or dashboards; Grafana's HTTP API can, with a service account token.
//
// Plain JavaScript for the Lambda Node.js runtime, no dependencies: `fetch` for Grafana, the
// AWS SDK v3 client the runtime ships for the workspace's service account. Every request has a
// deadline, and the answer reaches CloudFormation's pre-signed URL before the function's own
// timeout, so a deployment never waits the hour CloudFormation gives a silent custom resource.
//
// Two kinds of resource (ResourceProperties.Kind):
//   Setup      the service account `ServiceAccountName` (Grafana admin), the data source uid
//              `prometheus` (SigV4, the workspace's IAM role) and the folder; Delete removes them
//              (the folder only when empty: a dashboard saved there by hand stays).
//   Dashboard  one dashboard, `Dashboard` being the file's text, saved with overwrite; Delete
//              removes it (the files in the repository are the source: a re-deployment
//              overwrites any edit made in the UI anyway).
// Each invocation makes a token valid TOKEN_SECONDS and deletes it when done.
'use strict';

const HTTP_TIMEOUT_MS = 10_000;
const TOKEN_SECONDS = 300;
/** Time kept to send the answer to CloudFormation before the function times out. */
const ANSWER_MARGIN_MS = 10_000;
/** CloudFormation refuses answers over 4096 bytes: the reason is cut well below that. */
const REASON_MAX = 1000;
/** The physical id of a resource whose Create failed: its Delete (the rollback) has nothing to do. */
const NOT_CREATED = '#not-created';

/** An error answer of Grafana's HTTP API: its status and its message. */
class GrafanaError extends Error {
  constructor(method, path, status, message) {
    super(`grafana answered ${status} to ${method} ${path}: ${message}`);
    this.status = status;
  }
}

exports.handler = async (event, context) => {
  const remaining = context && context.getRemainingTimeInMillis ? context.getRemainingTimeInMillis() : 120_000;
  const limit = Math.max(remaining - ANSWER_MARGIN_MS, 1_000);
  let timer;
  const deadline = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ Status: 'FAILED', Reason: `timed out: no result within ${limit / 1000} s` }), limit);
  });
  const work = run(event).then(
    (done) => ({ Status: 'SUCCESS', ...done }),
    (err) => ({ Status: 'FAILED', Reason: String(err && err.message ? err.message : err) }),
  );
  const outcome = await Promise.race([work, deadline]);
  clearTimeout(timer);
  if (outcome.Status === 'FAILED') console.log(`${event.RequestType} ${event.LogicalResourceId} failed: ${outcome.Reason}`);
  await answer(event, outcome);
  return outcome;
};

/** Does what the request asks; returns { PhysicalResourceId, Data, Reason? }. */
async function run(event) {
  const p = event.ResourceProperties || {};
  const kind = p.Kind;
  if (kind !== 'Setup' && kind !== 'Dashboard') throw new Error(`unknown Kind ${JSON.stringify(kind)}: Setup or Dashboard`);
  for (const key of ['WorkspaceId', 'GrafanaUrl', 'ServiceAccountName']) {
    if (!p[key]) throw new Error(`property ${key} is missing`);
  }
  if (event.RequestType === 'Delete') return remove(event, p);
  const aws = awsClient();
  if (kind === 'Setup') {
    await withToken(aws, p, true, (g) => setup(g, p));
    return { PhysicalResourceId: `${p.WorkspaceId}/setup`, Data: { DataSourceUid: p.DataSourceUid, FolderUid: p.FolderUid } };
  }
  const dashboard = parseDashboard(p.Dashboard);
  const saved = await withToken(aws, p, false, (g) => g('POST', '/api/dashboards/db', {
    dashboard: { ...dashboard, id: null },
    folderUid: p.FolderUid,
    overwrite: true,
    message: `cloudformation ${event.RequestType.toLowerCase()} (${event.StackId || 'stack'})`,
  }));
  return {
    PhysicalResourceId: `${p.WorkspaceId}/dashboards/${saved.uid}`,
    Data: { Uid: saved.uid, Url: saved.url, Version: String(saved.version) },
  };
}

function parseDashboard(text) {
  let dashboard;
  try {
    dashboard = JSON.parse(text);
  } catch (err) {
    throw new Error(`property Dashboard is not JSON: ${err.message}`);
  }
  if (!dashboard || typeof dashboard.uid !== 'string' || !dashboard.uid) throw new Error('the dashboard has no uid');
  return dashboard;
}

/** The data source (created or replaced) and the folder (created if missing). */
async function setup(g, p) {
  const uid = p.DataSourceUid;
  const dataSource = {
    uid,
    name: p.DataSourceName,
    type: 'prometheus',
    access: 'proxy',
    url: p.PrometheusUrl,
    isDefault: true,
    jsonData: {
      httpMethod: 'POST',
      sigV4Auth: true,
      // "Workspace IAM role" in Managed Grafana: the workspace's role signs the queries.
      sigV4AuthType: 'ec2_iam_role',
      sigV4Region: p.Region,
      // The collector's scrape interval: Grafana derives $__rate_interval from it.
      timeInterval: p.ScrapeInterval,
    },
  };
  const existing = await g('GET', `/api/datasources/uid/${encodeURIComponent(uid)}`, undefined, [404]);
  if (existing) await g('PUT', `/api/datasources/uid/${encodeURIComponent(uid)}`, dataSource);
  else await g('POST', '/api/datasources', dataSource);
  const folder = await g('GET', `/api/folders/${encodeURIComponent(p.FolderUid)}`, undefined, [404]);
  if (!folder) await g('POST', '/api/folders', { uid: p.FolderUid, title: p.FolderTitle });
  else if (folder.title !== p.FolderTitle) await g('PUT', `/api/folders/${encodeURIComponent(p.FolderUid)}`, { title: p.FolderTitle, overwrite: true });
}

/** Delete: what the resource made, tolerating what is already gone (and a workspace that is). */
async function remove(event, p) {
  const id = event.PhysicalResourceId || '';
  const done = { PhysicalResourceId: id };
  if (id.endsWith(NOT_CREATED)) return done;
  const aws = awsClient();
  try {
    if (p.Kind === 'Dashboard') {
      const uid = id.slice(id.lastIndexOf('/') + 1);
      // The service account is made again if it was removed by hand: the setup's Delete, which
      // comes after every dashboard's, removes it.
      await withToken(aws, p, true, (g) => g('DELETE', `/api/dashboards/uid/${encodeURIComponent(uid)}`, undefined, [404]));
      return done;
    }
    let kept = '';
    // As for a dashboard, a service account removed by hand is made again, and removed below.
    const account = await withToken(aws, p, true, async (g, made) => {
      await g('DELETE', `/api/datasources/uid/${encodeURIComponent(p.DataSourceUid)}`, undefined, [404]);
      const inside = await g('GET', `/api/search?folderUIDs=${encodeURIComponent(p.FolderUid)}&type=dash-db`, undefined, [404]);
      if (inside && inside.length > 0) kept = `folder ${p.FolderUid} kept: it holds ${inside.length} dashboard(s) not made by the stack`;
      else await g('DELETE', `/api/folders/${encodeURIComponent(p.FolderUid)}`, undefined, [404]);
      return made;
    });
    await aws.send('DeleteWorkspaceServiceAccount', { workspaceId: p.WorkspaceId, serviceAccountId: account.id });
    if (kept) console.log(kept);
    return kept ? { ...done, Data: { Kept: kept } } : done;
  } catch (err) {
    if (err.name === 'ResourceNotFoundException') return { ...done, Reason: 'the workspace is gone: nothing to delete' };
    throw err;
  }
}

/** The stack's service account, or undefined. */
async function findServiceAccount(aws, p) {
  let nextToken;
  do {
    const page = await aws.send('ListWorkspaceServiceAccounts', { workspaceId: p.WorkspaceId, maxResults: 100, nextToken });
    const found = (page.serviceAccounts || []).find((a) => a.name === p.ServiceAccountName);
    if (found) return found;
    nextToken = page.nextToken;
  } while (nextToken);
  return undefined;
}

/**
 * Runs `fn(g, account)` with `g(method, path, body, tolerated)` calling Grafana with a fresh token
 * of the service account (created first if `create` and missing), deleting the token afterwards.
 */
async function withToken(aws, p, create, fn) {
  let account = await findServiceAccount(aws, p);
  if (!account && create) {
    account = await aws.send('CreateWorkspaceServiceAccount', { workspaceId: p.WorkspaceId, name: p.ServiceAccountName, grafanaRole: 'ADMIN' });
  }
  if (!account) throw new Error(`service account ${p.ServiceAccountName} not found in workspace ${p.WorkspaceId}: the Setup resource makes it`);
  const created = await aws.send('CreateWorkspaceServiceAccountToken', {
    workspaceId: p.WorkspaceId,
    serviceAccountId: account.id,
    name: `cloudformation-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`,
    secondsToLive: TOKEN_SECONDS,
  });
  const token = created.serviceAccountToken;
  try {
    return await fn(grafanaCaller(p.GrafanaUrl, token.key), account);
  } finally {
    await aws.send('DeleteWorkspaceServiceAccountToken', { workspaceId: p.WorkspaceId, serviceAccountId: account.id, tokenId: token.id })
      .catch((err) => console.log(`deleting token ${token.id} failed (it expires in ${TOKEN_SECONDS} s): ${err.message}`));
  }
}

/** A Grafana HTTP API caller: JSON in and out, a deadline per request, errors with Grafana's message. */
function grafanaCaller(base, key) {
  const root = base.replace(/\/+$/, '');
  return async (method, path, body, tolerated = []) => {
    let res;
    let text;
    try {
      res = await fetch(root + path, {
        method,
        headers: { Authorization: `Bearer ${key}`, Accept: 'application/json', 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
      });
      text = await res.text();
    } catch (err) {
      const why = err.name === 'TimeoutError' ? `no answer within ${HTTP_TIMEOUT_MS / 1000} s` : (err.cause && err.cause.message) || err.message;
      throw new Error(`calling grafana ${method} ${path}: ${why}`);
    }
    if (tolerated.includes(res.status)) return undefined;
    let json;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      json = undefined;
    }
    if (!res.ok) throw new GrafanaError(method, path, res.status, (json && json.message) || text.slice(0, 300) || res.statusText);
    return json;
  };
}

/** The Managed Grafana API through the SDK the Lambda runtime ships, each call bounded and named in its errors. */
function awsClient() {
  const sdk = require('@aws-sdk/client-grafana');
  const client = new sdk.GrafanaClient({ maxAttempts: 3, requestHandler: { connectionTimeout: 5_000, requestTimeout: HTTP_TIMEOUT_MS } });
  return {
    send: async (name, input) => {
      try {
        return await client.send(new sdk[`${name}Command`](input));
      } catch (err) {
        const wrapped = new Error(`${name} on workspace ${input.workspaceId}: ${err.name}: ${err.message}`);
        wrapped.name = err.name;
        throw wrapped;
      }
    },
  };
}

/** The answer to CloudFormation: a PUT of the JSON document to the pre-signed URL. */
async function answer(event, outcome) {
  const failedCreate = outcome.Status === 'FAILED' && event.RequestType === 'Create';
  const body = JSON.stringify({
    Status: outcome.Status,
    Reason: (outcome.Reason || `see the log group of ${process.env.AWS_LAMBDA_FUNCTION_NAME || 'the function'}`).slice(0, REASON_MAX),
    PhysicalResourceId: outcome.PhysicalResourceId || (failedCreate ? `${event.LogicalResourceId}${NOT_CREATED}` : event.PhysicalResourceId),
    StackId: event.StackId,
    RequestId: event.RequestId,
    LogicalResourceId: event.LogicalResourceId,
    Data: outcome.Data || {},
  });
  for (let attempt = 1; attempt <= 3; attempt++) {
    try {
      const res = await fetch(event.ResponseURL, {
        method: 'PUT',
        headers: { 'Content-Type': '' },
        body,
        signal: AbortSignal.timeout(HTTP_TIMEOUT_MS / 4),
      });
      if (res.ok) return;
      console.log(`answering cloudformation: status ${res.status} (attempt ${attempt})`);
    } catch (err) {
      console.log(`answering cloudformation: ${err.message} (attempt ${attempt})`);
    }
  }
}
