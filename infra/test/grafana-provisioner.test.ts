// The custom resource's handler (lambda/grafana-provisioner/index.js), run as Lambda runs it,
// against:
//   - a local HTTP server answering as Grafana's HTTP API does (no Grafana can run here: there is
//     no Docker, and no Grafana package on the reachable npm, PyPI or Debian mirrors). Its answers
//     follow Amazon Managed Grafana's pages for Grafana 10 ("Data source API", "Folder API",
//     "Dashboard API", "Search API" of the user guide, v10-Grafana-API-*): status codes, the
//     `{"message": ...}` error bodies, the `uid`/`url`/`version` of a saved dashboard. It also
//     plays CloudFormation's pre-signed response URL and records what is PUT there;
//   - a stub of the AWS SDK v3 Grafana client the Lambda runtime ships (a virtual module: the
//     SDK is not a dependency of infra/), answering as the Managed Grafana API reference
//     describes ListWorkspaceServiceAccounts, CreateWorkspaceServiceAccount(Token) and the deletes.
import * as fs from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import * as path from 'path';
import { DASHBOARDS_DIR, PROVISIONER_DIR } from '../lib/grafana';

interface Call { name: string; input: Record<string, any> }
// The stub SDK's state (a `mock` prefix lets jest's hoisted factory see it).
const mockAws: { calls: Call[]; accounts: { id: string; name: string; grafanaRole: string }[]; tokens: Map<string, string>; issued: number; fail?: Record<string, string> } = {
  calls: [], accounts: [], tokens: new Map(), issued: 0,
};
jest.mock('@aws-sdk/client-grafana', () => {
  class Command { constructor(readonly input: Record<string, any>) {} }
  const names = ['ListWorkspaceServiceAccounts', 'CreateWorkspaceServiceAccount', 'DeleteWorkspaceServiceAccount',
    'CreateWorkspaceServiceAccountToken', 'DeleteWorkspaceServiceAccountToken'];
  const commands = Object.fromEntries(names.map((n) => [`${n}Command`, class extends Command { static commandName = n; }]));
  class GrafanaClient {
    async send(command: any) {
      const name = command.constructor.commandName as string;
      const input = command.input;
      mockAws.calls.push({ name, input });
      const failure = mockAws.fail?.[name];
      if (failure) throw Object.assign(new Error('User is not authorized to perform this action'), { name: failure });
      if (input.workspaceId !== 'g-0123456789') throw Object.assign(new Error('workspace not found'), { name: 'ResourceNotFoundException' });
      switch (name) {
        case 'ListWorkspaceServiceAccounts':
          return { workspaceId: input.workspaceId, serviceAccounts: mockAws.accounts.map((a) => ({ ...a, isDisabled: false })) };
        case 'CreateWorkspaceServiceAccount': {
          const account = { id: String(mockAws.accounts.length + 7), name: input.name, grafanaRole: input.grafanaRole };
          mockAws.accounts.push(account);
          return { ...account, workspaceId: input.workspaceId };
        }
        case 'DeleteWorkspaceServiceAccount':
          mockAws.accounts = mockAws.accounts.filter((a) => a.id !== input.serviceAccountId);
          return { serviceAccountId: input.serviceAccountId, workspaceId: input.workspaceId };
        case 'CreateWorkspaceServiceAccountToken': {
          const id = String(100 + mockAws.issued++);
          const key = `glsa_key_${id}`;
          mockAws.tokens.set(id, key);
          return { serviceAccountId: input.serviceAccountId, workspaceId: input.workspaceId, serviceAccountToken: { id, name: input.name, key } };
        }
        case 'DeleteWorkspaceServiceAccountToken':
          mockAws.tokens.delete(input.tokenId);
          return { serviceAccountId: input.serviceAccountId, tokenId: input.tokenId, workspaceId: input.workspaceId };
        default:
          throw new Error(`unexpected command ${name}`);
      }
    }
  }
  return { GrafanaClient, ...commands };
}, { virtual: true });

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { handler } = require(path.join(PROVISIONER_DIR, 'index.js'));

interface Request { method: string; path: string; auth?: string; body?: any }

/** A Grafana that keeps data sources, folders and dashboards in memory, and CloudFormation's URL. */
class FakeGrafana {
  requests: Request[] = [];
  responses: any[] = [];
  dataSources = new Map<string, any>();
  folders = new Map<string, any>();
  dashboards = new Map<string, any>();
  /** Answers every POST /api/dashboards/db with this status and message. */
  refuseDashboards?: { status: number; message: string };
  /** Never answers these paths. */
  hang = new Set<string>();
  private server = http.createServer((req, res) => this.serve(req, res));
  url = '';

  async start() {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop() {
    if (!this.server.listening) return;
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  grafanaRequests() {
    return this.requests.filter((r) => r.path.startsWith('/api/'));
  }

  private serve(req: http.IncomingMessage, res: http.ServerResponse) {
    let text = '';
    req.on('data', (c) => (text += c));
    req.on('end', () => {
      const body = text ? JSON.parse(text) : undefined;
      const url = req.url ?? '';
      this.requests.push({ method: req.method!, path: url, auth: req.headers.authorization, body });
      if (this.hang.has(url)) return;
      const send = (status: number, json: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(json));
      };
      if (url.startsWith('/cloudformation/')) {
        this.responses.push(body);
        return send(200, {});
      }
      const key = (req.headers.authorization ?? '').replace(/^Bearer /, '');
      if (![...mockAws.tokens.values()].includes(key)) return send(401, { message: 'invalid API key' });
      this.route(req.method!, url, body, send);
    });
  }

  private route(method: string, url: string, body: any, send: (status: number, json: unknown) => void) {
    const [p, query] = url.split('?');
    let m: RegExpMatchArray | null;
    if ((m = p.match(/^\/api\/datasources\/uid\/([^/]+)$/))) {
      const ds = this.dataSources.get(m[1]);
      if (method === 'GET') return ds ? send(200, ds) : send(404, { message: 'Data source not found' });
      if (method === 'PUT') {
        if (!ds) return send(404, { message: 'Data source not found' });
        this.dataSources.set(m[1], { ...body, id: ds.id });
        return send(200, { datasource: this.dataSources.get(m[1]), id: ds.id, message: 'Datasource updated', name: body.name });
      }
      if (method === 'DELETE') {
        if (!this.dataSources.delete(m[1])) return send(404, { message: 'Data source not found' });
        return send(200, { message: 'Data source deleted', id: 1 });
      }
    }
    if (p === '/api/datasources' && method === 'POST') {
      if ([...this.dataSources.values()].some((d) => d.name === body.name)) return send(409, { message: 'data source with the same name already exists' });
      this.dataSources.set(body.uid, { ...body, id: this.dataSources.size + 1 });
      return send(200, { datasource: this.dataSources.get(body.uid), id: this.dataSources.size, message: 'Datasource added', name: body.name });
    }
    if ((m = p.match(/^\/api\/folders\/([^/]+)$/))) {
      const f = this.folders.get(m[1]);
      if (method === 'GET') return f ? send(200, f) : send(404, { message: 'folder not found' });
      if (method === 'DELETE') {
        if (!this.folders.delete(m[1])) return send(404, { message: 'folder not found' });
        return send(200, { message: 'Folder deleted', id: f.id });
      }
    }
    if (p === '/api/folders' && method === 'POST') {
      if (this.folders.has(body.uid)) return send(409, { message: 'a folder with the same uid already exists' });
      this.folders.set(body.uid, { id: this.folders.size + 1, uid: body.uid, title: body.title, url: `/dashboards/f/${body.uid}/`, version: 1 });
      return send(200, this.folders.get(body.uid));
    }
    if (p === '/api/search' && method === 'GET') {
      const folder = new URLSearchParams(query).get('folderUIDs');
      return send(200, [...this.dashboards.values()].filter((d) => d.folderUid === folder).map((d) => ({ uid: d.dashboard.uid, type: 'dash-db' })));
    }
    if (p === '/api/dashboards/db' && method === 'POST') {
      if (this.refuseDashboards) return send(this.refuseDashboards.status, { message: this.refuseDashboards.message, status: 'error' });
      if (!this.folders.has(body.folderUid)) return send(400, { message: 'folder not found' });
      const uid = body.dashboard.uid;
      const previous = this.dashboards.get(uid);
      if (previous && !body.overwrite) return send(412, { message: 'A dashboard with the same uid already exists', status: 'name-exists' });
      const version = previous ? previous.version + 1 : 1;
      this.dashboards.set(uid, { ...body, version });
      return send(200, { id: 5, uid, url: `/d/${uid}/slug`, status: 'success', version, slug: 'slug' });
    }
    if ((m = p.match(/^\/api\/dashboards\/uid\/([^/]+)$/)) && method === 'DELETE') {
      if (!this.dashboards.delete(m[1])) return send(404, { message: 'Dashboard not found' });
      return send(200, { title: m[1], message: 'Dashboard deleted', id: 5 });
    }
    send(404, { message: 'Not found' });
  }
}

let grafana: FakeGrafana;
beforeEach(async () => {
  mockAws.calls = [];
  mockAws.accounts = [];
  mockAws.tokens = new Map();
  mockAws.issued = 0;
  mockAws.fail = undefined;
  grafana = new FakeGrafana();
  await grafana.start();
});
afterEach(() => grafana.stop());

const context = (ms = 120_000) => ({ getRemainingTimeInMillis: () => ms });
const common = () => ({ WorkspaceId: 'g-0123456789', GrafanaUrl: grafana.url, ServiceAccountName: 'tributary-provisioner', FolderUid: 'tributary' });
const setupProps = () => ({
  ...common(),
  Kind: 'Setup',
  FolderTitle: 'Tributary',
  DataSourceUid: 'prometheus',
  DataSourceName: 'Prometheus',
  PrometheusUrl: 'https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1234/',
  Region: 'us-east-1',
  ScrapeInterval: '30s',
});
const dashboardText = fs.readFileSync(path.join(DASHBOARDS_DIR, 'api-performance.json'), 'utf8');
const dashboardProps = () => ({ ...common(), Kind: 'Dashboard', Dashboard: dashboardText });
let requests = 0;
function event(requestType: string, properties: Record<string, any>, physicalId?: string) {
  const id = ++requests;
  return {
    RequestType: requestType,
    ResponseURL: `${grafana.url}/cloudformation/response-${id}?X-Amz-Signature=abc`,
    StackId: 'arn:aws:cloudformation:us-east-1:123456789012:stack/Tributary/1',
    RequestId: `request-${id}`,
    LogicalResourceId: properties.Kind === 'Setup' ? 'GrafanaSetup' : 'DashboardApiPerformance',
    ResourceType: `Custom::Grafana${properties.Kind}`,
    PhysicalResourceId: physicalId,
    ResourceProperties: { ServiceToken: 'arn:aws:lambda:us-east-1:123456789012:function:f', ...properties },
  };
}
const names = () => mockAws.calls.map((c) => c.name);
const trail = () => grafana.grafanaRequests().map((r) => `${r.method} ${r.path}`);

test('setup makes the service account, a short-lived token, the SigV4 data source and the folder, then deletes the token', async () => {
  await handler(event('Create', setupProps()), context());
  expect(names()).toEqual(['ListWorkspaceServiceAccounts', 'CreateWorkspaceServiceAccount', 'CreateWorkspaceServiceAccountToken', 'DeleteWorkspaceServiceAccountToken']);
  expect(mockAws.calls[1].input).toEqual({ workspaceId: 'g-0123456789', name: 'tributary-provisioner', grafanaRole: 'ADMIN' });
  expect(mockAws.calls[2].input).toMatchObject({ workspaceId: 'g-0123456789', serviceAccountId: '7', secondsToLive: 300 });
  expect(mockAws.calls[3].input).toEqual({ workspaceId: 'g-0123456789', serviceAccountId: '7', tokenId: '100' });
  expect(mockAws.tokens.size).toBe(0);
  expect(trail()).toEqual(['GET /api/datasources/uid/prometheus', 'POST /api/datasources', 'GET /api/folders/tributary', 'POST /api/folders']);
  expect(grafana.grafanaRequests().every((r) => r.auth === 'Bearer glsa_key_100')).toBe(true);
  expect(grafana.requests[1].body).toEqual({
    uid: 'prometheus',
    name: 'Prometheus',
    type: 'prometheus',
    access: 'proxy',
    url: 'https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1234/',
    isDefault: true,
    jsonData: { httpMethod: 'POST', sigV4Auth: true, sigV4AuthType: 'ec2_iam_role', sigV4Region: 'us-east-1', timeInterval: '30s' },
  });
  expect(grafana.requests[3].body).toEqual({ uid: 'tributary', title: 'Tributary' });
  // The answer CloudFormation reads, PUT to the pre-signed URL.
  const put = grafana.requests.find((r) => r.path.startsWith('/cloudformation/'))!;
  expect(put.method).toBe('PUT');
  expect(put.path).toBe('/cloudformation/response-1?X-Amz-Signature=abc');
  expect(grafana.responses).toEqual([{
    Status: 'SUCCESS',
    Reason: expect.any(String),
    PhysicalResourceId: 'g-0123456789/setup',
    StackId: 'arn:aws:cloudformation:us-east-1:123456789012:stack/Tributary/1',
    RequestId: 'request-1',
    LogicalResourceId: 'GrafanaSetup',
    Data: { DataSourceUid: 'prometheus', FolderUid: 'tributary' },
  }]);
});

test('a re-run (update) reuses the service account and overwrites the data source in place', async () => {
  await handler(event('Create', setupProps()), context());
  grafana.requests = [];
  mockAws.calls = [];
  const changed = { ...setupProps(), PrometheusUrl: 'https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-5678/' };
  await handler(event('Update', changed, 'g-0123456789/setup'), context());
  expect(names()).toEqual(['ListWorkspaceServiceAccounts', 'CreateWorkspaceServiceAccountToken', 'DeleteWorkspaceServiceAccountToken']);
  expect(trail()).toEqual(['GET /api/datasources/uid/prometheus', 'PUT /api/datasources/uid/prometheus', 'GET /api/folders/tributary']);
  expect(grafana.dataSources.get('prometheus').url).toBe('https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-5678/');
  expect(grafana.dataSources.size).toBe(1);
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'g-0123456789/setup' });
});

test('a dashboard is saved from the file, unchanged, into the folder with overwrite, and again on a re-run', async () => {
  await handler(event('Create', setupProps()), context());
  grafana.requests = [];
  await handler(event('Create', dashboardProps()), context());
  const saves = grafana.grafanaRequests();
  expect(saves.map((r) => `${r.method} ${r.path}`)).toEqual(['POST /api/dashboards/db']);
  expect(saves[0].body).toEqual({
    dashboard: { ...JSON.parse(dashboardText), id: null },
    folderUid: 'tributary',
    overwrite: true,
    message: 'cloudformation create (arn:aws:cloudformation:us-east-1:123456789012:stack/Tributary/1)',
  });
  expect(grafana.responses.at(-1)).toMatchObject({
    Status: 'SUCCESS',
    PhysicalResourceId: 'g-0123456789/dashboards/trib-api',
    Data: { Uid: 'trib-api', Url: '/d/trib-api/slug', Version: '1' },
  });
  // The same dashboard again (an update): overwritten, same physical id, a new version.
  await handler(event('Update', dashboardProps(), 'g-0123456789/dashboards/trib-api'), context());
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'g-0123456789/dashboards/trib-api', Data: { Version: '2' } });
  expect(grafana.dashboards.size).toBe(1);
  expect(mockAws.tokens.size).toBe(0);
});

test('a 4xx from Grafana fails the resource with its status and message, and the token is still deleted', async () => {
  await handler(event('Create', setupProps()), context());
  grafana.refuseDashboards = { status: 403, message: 'Permissions needed: dashboards:create' };
  const outcome = await handler(event('Create', dashboardProps()), context());
  expect(outcome.Status).toBe('FAILED');
  const answer = grafana.responses.at(-1);
  expect(answer).toMatchObject({ Status: 'FAILED', LogicalResourceId: 'DashboardApiPerformance', RequestId: expect.stringMatching(/^request-/) });
  expect(answer.Reason).toBe('grafana answered 403 to POST /api/dashboards/db: Permissions needed: dashboards:create');
  // A failed create has nothing to delete on rollback.
  expect(answer.PhysicalResourceId).toBe('DashboardApiPerformance#not-created');
  expect(mockAws.tokens.size).toBe(0);
  mockAws.calls = [];
  grafana.requests = [];
  await handler(event('Delete', dashboardProps(), answer.PhysicalResourceId), context());
  expect(mockAws.calls).toEqual([]);
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'DashboardApiPerformance#not-created' });
});

test('an AWS error (no permission for a token) fails the resource with the API\'s error name', async () => {
  mockAws.fail = { CreateWorkspaceServiceAccountToken: 'AccessDeniedException' };
  await handler(event('Update', setupProps(), 'g-0123456789/setup'), context());
  expect(grafana.responses[0]).toMatchObject({ Status: 'FAILED', PhysicalResourceId: 'g-0123456789/setup' });
  expect(grafana.responses[0].Reason).toBe('CreateWorkspaceServiceAccountToken on workspace g-0123456789: AccessDeniedException: User is not authorized to perform this action');
  expect(grafana.grafanaRequests()).toEqual([]);
});

test('a Grafana that does not answer fails the resource before the function times out', async () => {
  await handler(event('Create', setupProps()), context());
  expect(grafana.responses[0].Status).toBe('SUCCESS');
  grafana.hang.add('/api/dashboards/db');
  const started = Date.now();
  // 11.5 s left: the handler answers after 1.5 s, keeping 10 s to send the answer.
  await handler(event('Create', dashboardProps()), context(11_500));
  expect(Date.now() - started).toBeLessThan(5_000);
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'FAILED', Reason: 'timed out: no result within 1.5 s' });
  // The abandoned request ends when the connection closes, and its token is deleted.
  await grafana.stop();
  for (let i = 0; i < 50 && mockAws.tokens.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 100));
  expect(mockAws.tokens.size).toBe(0);
}, 20_000);

test('delete removes the dashboard, then the data source, the empty folder and the service account', async () => {
  await handler(event('Create', setupProps()), context());
  await handler(event('Create', dashboardProps()), context());
  expect(grafana.responses.map((r) => r.Status)).toEqual(['SUCCESS', 'SUCCESS']);
  expect([grafana.dataSources.size, grafana.folders.size, grafana.dashboards.size]).toEqual([1, 1, 1]);
  grafana.requests = [];
  await handler(event('Delete', dashboardProps(), 'g-0123456789/dashboards/trib-api'), context());
  expect(grafana.dashboards.size).toBe(0);
  expect(trail()).toEqual(['DELETE /api/dashboards/uid/trib-api']);
  // Already gone (deleted by hand): still a success.
  await handler(event('Delete', dashboardProps(), 'g-0123456789/dashboards/trib-api'), context());
  expect(grafana.responses.slice(-2).map((r) => r.Status)).toEqual(['SUCCESS', 'SUCCESS']);
  grafana.requests = [];
  mockAws.calls = [];
  await handler(event('Delete', setupProps(), 'g-0123456789/setup'), context());
  expect(trail()).toEqual(['DELETE /api/datasources/uid/prometheus', 'GET /api/search?folderUIDs=tributary&type=dash-db', 'DELETE /api/folders/tributary']);
  expect(names()).toEqual(['ListWorkspaceServiceAccounts', 'CreateWorkspaceServiceAccountToken',
    'DeleteWorkspaceServiceAccountToken', 'DeleteWorkspaceServiceAccount']);
  expect(mockAws.accounts).toEqual([]);
  expect([grafana.dataSources.size, grafana.folders.size]).toEqual([0, 0]);
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'g-0123456789/setup' });
});

test('delete removes the dashboard even when its service account was removed by hand', async () => {
  await handler(event('Create', setupProps()), context());
  await handler(event('Create', dashboardProps()), context());
  mockAws.accounts = [];
  await handler(event('Delete', dashboardProps(), 'g-0123456789/dashboards/trib-api'), context());
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS' });
  expect(grafana.dashboards.size).toBe(0);
  // The setup's Delete, which runs next, then removes the service account made for this.
  await handler(event('Delete', setupProps(), 'g-0123456789/setup'), context());
  expect(mockAws.accounts).toEqual([]);
  expect(mockAws.tokens.size).toBe(0);
});

test('the setup\'s delete removes the data source and the folder even when the service account was removed by hand', async () => {
  await handler(event('Create', setupProps()), context());
  mockAws.accounts = [];
  await handler(event('Delete', setupProps(), 'g-0123456789/setup'), context());
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: 'g-0123456789/setup' });
  expect([grafana.dataSources.size, grafana.folders.size]).toEqual([0, 0]);
  expect(mockAws.accounts).toEqual([]);
});

test('delete keeps a folder holding dashboards the stack did not make, and says so', async () => {
  await handler(event('Create', setupProps()), context());
  expect(grafana.folders.has('tributary')).toBe(true);
  grafana.dashboards.set('mine', { dashboard: { uid: 'mine' }, folderUid: 'tributary', version: 1 });
  await handler(event('Delete', setupProps(), 'g-0123456789/setup'), context());
  expect(grafana.folders.has('tributary')).toBe(true);
  expect(grafana.dataSources.size).toBe(0);
  expect(grafana.responses.at(-1)).toMatchObject({ Status: 'SUCCESS', Data: { Kept: 'folder tributary kept: it holds 1 dashboard(s) not made by the stack' } });
});

test('delete on a workspace that is gone succeeds', async () => {
  await handler(event('Delete', { ...setupProps(), WorkspaceId: 'g-9999999999' }, 'g-9999999999/setup'), context());
  expect(grafana.responses[0]).toMatchObject({ Status: 'SUCCESS', Reason: 'the workspace is gone: nothing to delete' });
});
