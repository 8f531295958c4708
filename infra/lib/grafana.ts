// Amazon Managed Grafana, provisioned (with -c managedGrafana=true): the Prometheus data source on
// the AMP workspace and the four dashboards of deploy/monitoring/grafana/dashboards, read at synth
// time from those files. CloudFormation has no resource for Grafana data sources or dashboards, so
// a Lambda-backed custom resource calls Grafana's HTTP API with a short-lived service account
// token (lambda/grafana-provisioner/index.js says what each request does).
//
//   Setup                       service account, data source `prometheus`, folder "Tributary"
//     └─ Dashboard-<file> (×4)  one dashboard each: an edited file updates only its dashboard
//
// One resource per dashboard also names the dashboard in a failure and keeps every request small:
// CloudFormation sends a custom resource its properties, and on an update its old ones too, so a
// resource with the four files (113 KB) would send about 230 KB per update. Lambda accepted 256 KB
// in an asynchronous invocation until October 2025 (1 MB since); one file at a time stays far
// below either.
import * as fs from 'fs';
import * as path from 'path';
import { CfnResource, CustomResource, Duration, Stack } from 'aws-cdk-lib';
import * as aps from 'aws-cdk-lib/aws-aps';
import * as grafana from 'aws-cdk-lib/aws-grafana';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { skipChecks } from './checkov';

/** deploy/monitoring/grafana/dashboards, read at synth: the dashboards Grafana shows are these files. */
export const DASHBOARDS_DIR = path.join(__dirname, '..', '..', 'deploy', 'monitoring', 'grafana', 'dashboards');
/** The handler's directory: index.js alone, deployed as it is (no bundling, no dependency). */
export const PROVISIONER_DIR = path.join(__dirname, '..', 'lambda', 'grafana-provisioner');
/** Every panel of the dashboards names its data source by this uid. */
export const DATA_SOURCE_UID = 'prometheus';
export const FOLDER_UID = 'tributary';
export const FOLDER_TITLE = 'Tributary';
/**
 * The Grafana API calls of the handler, nothing else: find or make its service account, a token
 * for each run, and clean up.
 */
export const PROVISIONER_ACTIONS = [
  'grafana:ListWorkspaceServiceAccounts',
  'grafana:CreateWorkspaceServiceAccount',
  'grafana:DeleteWorkspaceServiceAccount',
  'grafana:CreateWorkspaceServiceAccountToken',
  'grafana:DeleteWorkspaceServiceAccountToken',
];

/** Every dashboard file, as [file name without .json, file text], in name order. */
export function dashboardFiles(dir = DASHBOARDS_DIR): [string, string][] {
  return fs.readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => [f.replace(/\.json$/, ''), fs.readFileSync(path.join(dir, f), 'utf8')]);
}

export interface GrafanaDashboardsProps {
  readonly workspace: grafana.CfnWorkspace;
  readonly prometheus: aps.CfnWorkspace;
  /** Prefix of the service account's name. */
  readonly name: string;
  /** The collector's scrape interval, the data source's `timeInterval`. */
  readonly scrapeInterval: string;
  /** The handler's log group (retention and key set by the caller). */
  readonly logGroup: logs.ILogGroup;
}

export class GrafanaDashboards extends Construct {
  readonly function: lambda.Function;
  readonly setup: CustomResource;
  readonly dashboards: CustomResource[] = [];

  constructor(scope: Construct, id: string, props: GrafanaDashboardsProps) {
    super(scope, id);
    const stack = Stack.of(this);
    // Managed Grafana's workspace ARNs have a slash before `workspaces`.
    const workspaceArn = `arn:${stack.partition}:grafana:${stack.region}:${stack.account}:/workspaces/${props.workspace.attrId}`;

    // Least privilege: the five service-account calls on this workspace, and its own log group.
    const role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: 'Provisions the Tributary data source and dashboards in Amazon Managed Grafana',
    });
    role.addToPrincipalPolicy(new iam.PolicyStatement({
      sid: 'ServiceAccountTokensOfTheWorkspace',
      actions: PROVISIONER_ACTIONS,
      resources: [workspaceArn],
    }));
    props.logGroup.grantWrite(role);

    this.function = new lambda.Function(this, 'Function', {
      description: 'Tributary: Grafana data source and dashboards (infra/lambda/grafana-provisioner)',
      runtime: lambda.Runtime.NODEJS_24_X,
      handler: 'index.handler',
      code: lambda.Code.fromAsset(PROVISIONER_DIR),
      role,
      logGroup: props.logGroup,
      timeout: Duration.minutes(2),
      memorySize: 256,
    });
    // CDK's Function names its role both in DependsOn and through GetAtt.
    (this.function.node.defaultChild as CfnResource).addMetadata('cfn-lint', { config: { ignore_checks: ['W3005'] } });
    skipChecks(this.function, {
      CKV_AWS_115: 'runs a few times per deployment, called by CloudFormation: a concurrency limit protects nothing',
      CKV_AWS_116: 'CloudFormation waits for its answer, which the handler always sends, errors included: a DLQ would hold nothing useful',
      CKV_AWS_117: 'it calls the public Managed Grafana API and the workspace\'s public endpoint; inside the VPC it would need NAT for the same calls, and ENI permissions',
    });

    const common = {
      Kind: '',
      WorkspaceId: props.workspace.attrId,
      GrafanaUrl: `https://${props.workspace.attrEndpoint}`,
      ServiceAccountName: `${props.name}-provisioner`,
      FolderUid: FOLDER_UID,
    };
    this.setup = new CustomResource(this, 'Setup', {
      serviceToken: this.function.functionArn,
      resourceType: 'Custom::GrafanaSetup',
      properties: {
        ...common,
        Kind: 'Setup',
        FolderTitle: FOLDER_TITLE,
        DataSourceUid: DATA_SOURCE_UID,
        DataSourceName: 'Prometheus',
        PrometheusUrl: props.prometheus.attrPrometheusEndpoint,
        Region: stack.region,
        ScrapeInterval: props.scrapeInterval,
      },
    });
    for (const [name, text] of dashboardFiles()) {
      const dashboard = new CustomResource(this, `Dashboard-${name}`, {
        serviceToken: this.function.functionArn,
        resourceType: 'Custom::GrafanaDashboard',
        properties: { ...common, Kind: 'Dashboard', Dashboard: text },
      });
      // After the folder and the data source; deleted before them.
      dashboard.node.addDependency(this.setup);
      this.dashboards.push(dashboard);
    }
  }
}
