// The Prometheus side of production monitoring: an Amazon Managed Service for Prometheus (AMP)
// workspace, the rule groups of deploy/monitoring/rules loaded into it, its alert manager sending
// to the stack's SNS topic, a collector that scrapes every service and broker inside the VPC, and
// (with -c managedGrafana=true) an Amazon Managed Grafana workspace reading it, with the data source
// and the four dashboards provisioned (grafana.ts).
//
//   gateway tasks  ─ gateway.<name>.internal:8080/metrics ─┐
//   processor-N    ─ processor-N.<name>.internal:8082 ─────┤  ADOT collector ──aps:RemoteWrite──▶ AMP
//   MSK brokers    ─ b-N....:11001 (JMX), :11002 (node) ───┘  (ECS service)    rules ──▶ alert manager ──▶ SNS
//
// Discovery: the gateway and each processor slot register A records in the Cloud Map namespace
// (services.ts, gateway.ts); the collector resolves them with Prometheus's dns_sd_configs, so it
// needs no ECS API permission. MSK brokers are named b-1 ... b-N in one DNS domain, which the
// bootstrap string gives.
//
// The collector is the AWS Distro for OpenTelemetry collector (docs/aws.md#metrics-in-the-vpc
// says why): its configuration comes in one environment variable (AOT_CONFIG_CONTENT), so the image runs unchanged
// with a read-only root file system, and it signs remote writes with the task role.
import * as fs from 'fs';
import * as path from 'path';
import { Duration, Fn, Stack, Validations } from 'aws-cdk-lib';
import * as aps from 'aws-cdk-lib/aws-aps';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as grafana from 'aws-cdk-lib/aws-grafana';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';
import { GrafanaDashboards } from './grafana';
import { GATEWAY_PORT, Network, PROCESSOR_PORT } from './network';
import { awsLogs, Services } from './services';

/** MSK open monitoring: the JMX exporter and the node exporter on every broker. */
export const MSK_JMX_EXPORTER_PORT = 11001;
export const MSK_NODE_EXPORTER_PORT = 11002;
/** The ADOT collector's health_check extension. */
const COLLECTOR_HEALTH_PORT = 13133;
/** How often the collector scrapes: also the Grafana data source's `timeInterval`. */
export const SCRAPE_INTERVAL = '30s';

/** The Managed Grafana version the workspace runs. */
export const GRAFANA_VERSION = '10.4';

/** deploy/monitoring/rules, read at synth: the rule groups AMP evaluates are these files. */
export const RULES_DIR = path.join(__dirname, '..', '..', 'deploy', 'monitoring', 'rules');

/** Every rule file, as [namespace name, YAML text], in name order. */
export function ruleFiles(dir = RULES_DIR): [string, string][] {
  return fs.readdirSync(dir)
    .filter((f) => f.endsWith('.yml') || f.endsWith('.yaml'))
    .sort()
    .map((f) => [f.replace(/\.ya?ml$/, ''), fs.readFileSync(path.join(dir, f), 'utf8')]);
}

export interface ObservabilityProps {
  readonly config: TributaryConfig;
  readonly network: Network;
  readonly services: Services;
  /** `b-1.<cluster>....:9096,b-2...` from GetBootstrapBrokers (a token at synth). */
  readonly bootstrapServers: string;
  readonly topic: sns.ITopic;
  /** The key of the SNS topic: the alert manager must be able to use it to publish. */
  readonly topicKey: kms.IKey;
}

export class Observability extends Construct {
  readonly workspace: aps.CfnWorkspace;
  readonly collector: ecs.FargateService;
  readonly collectorSg: ec2.SecurityGroup;
  readonly grafana?: grafana.CfnWorkspace;
  readonly dashboards?: GrafanaDashboards;

  constructor(scope: Construct, id: string, props: ObservabilityProps) {
    super(scope, id);
    const cfg = props.config;
    const stack = Stack.of(this);
    const net = props.network;

    // --- The workspace, its alert manager and its rules ------------------------------------
    this.workspace = new aps.CfnWorkspace(this, 'Workspace', {
      alias: cfg.name,
      alertManagerDefinition: alertManagerDefinition(props.topic.topicArn, stack.region),
    });
    for (const [name, data] of ruleFiles()) {
      new aps.CfnRuleGroupsNamespace(this, `Rules-${name}`, {
        workspace: this.workspace.attrArn,
        name,
        data,
      });
    }

    // The alert manager publishes as aps.amazonaws.com: to this topic, for this workspace only,
    // through the topic's KMS key. (The key's policy cannot name the workspace: the workspace
    // refers to the topic, which refers to the key.)
    props.topic.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'AmpAlertManagerPublishes',
      principals: [new iam.ServicePrincipal('aps.amazonaws.com')],
      actions: ['sns:Publish', 'sns:GetTopicAttributes'],
      resources: [props.topic.topicArn],
      conditions: {
        ArnEquals: { 'aws:SourceArn': this.workspace.attrArn },
        StringEquals: { 'aws:SourceAccount': stack.account },
      },
    }));
    props.topicKey.addToResourcePolicy(new iam.PolicyStatement({
      sid: 'AmpAlertManagerEncryptsForSns',
      principals: [new iam.ServicePrincipal('aps.amazonaws.com')],
      actions: ['kms:GenerateDataKey*', 'kms:Decrypt'],
      resources: ['*'],
      conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
    }));

    // --- The collector's network: exactly the scrapes it makes -----------------------------
    this.collectorSg = new ec2.SecurityGroup(this, 'CollectorSg', {
      vpc: net.vpc,
      description: `${cfg.name}: metrics collector (ADOT)`,
      allowAllOutbound: false,
    });
    const scrape = (to: ec2.SecurityGroup, port: number, what: string) => {
      this.collectorSg.addEgressRule(to, ec2.Port.tcp(port), what);
      to.addIngressRule(this.collectorSg, ec2.Port.tcp(port), what);
    };
    scrape(net.gatewaySg, GATEWAY_PORT, 'collector scrapes the gateway /metrics');
    scrape(net.processorSg, PROCESSOR_PORT, 'collector scrapes the processor /metrics');
    scrape(net.mskSg, MSK_JMX_EXPORTER_PORT, 'collector scrapes MSK open monitoring (JMX exporter)');
    scrape(net.mskSg, MSK_NODE_EXPORTER_PORT, 'collector scrapes MSK open monitoring (node exporter)');
    // AMP remote write, the image from ECR Public and CloudWatch Logs: HTTPS only.
    this.collectorSg.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS to AMP, ECR Public and CloudWatch Logs');

    // --- The collector task ------------------------------------------------------------------
    const task = props.services.taskDefinition('Collector', 'collector', 256, 512);
    // Least privilege: write samples into this workspace, nothing else (the execution role
    // that pulls the image and writes logs is CDK's, scoped to the log group).
    task.taskRole.addToPrincipalPolicy(new iam.PolicyStatement({
      sid: 'RemoteWriteToTheWorkspace',
      actions: ['aps:RemoteWrite'],
      resources: [this.workspace.attrArn],
    }));
    const namespace = `${cfg.name}.internal`;
    // Values known only at deploy time come in variables of their own, which the collector
    // expands (${env:...}): the configuration stays one plain text, and a CloudFormation
    // expression is written once, not once per target.
    const collectorConfig = JSON.stringify(adotConfig({
      region: stack.region,
      remoteWriteUrl: '${env:AMP_REMOTE_WRITE_URL}',
      gateway: [`gateway.${namespace}`],
      processors: Array.from({ length: cfg.processorInstances }, (_, i) => `processor-${i}.${namespace}`),
      brokers: Array.from({ length: cfg.brokerCount }, (_, i) => `b-${i + 1}.\${env:MSK_BROKER_DOMAIN}`),
    }));
    Validations.of(task).acknowledge({
      id: 'CloudFormation-Validate::E1029',
      reason: '${env:...} in the collector configuration is the collector\'s own variable syntax, not a CloudFormation parameter',
    });
    task.addContainer('collector', {
      image: ecs.ContainerImage.fromRegistry(cfg.collectorImage),
      logging: awsLogs('collector', props.services.logGroup('collector')),
      readonlyRootFilesystem: true,
      environment: {
        AOT_CONFIG_CONTENT: collectorConfig,
        AMP_REMOTE_WRITE_URL: `${this.workspace.attrPrometheusEndpoint}api/v1/remote_write`,
        MSK_BROKER_DOMAIN: mskBrokerDomain(props.bootstrapServers),
      },
      healthCheck: {
        command: ['CMD', '/healthcheck'],
        interval: Duration.seconds(30),
        timeout: Duration.seconds(5),
        retries: 3,
        startPeriod: Duration.seconds(30),
      },
    });
    // One collector: two would write every sample twice. A deployment stops the old task first
    // (a gap of about a minute in the graphs, which the rules' `for` durations absorb).
    this.collector = props.services.service('Collector', 'collector', task, this.collectorSg, 1, {
      minHealthyPercent: 0,
      maxHealthyPercent: 100,
    });

    // --- Optional: Amazon Managed Grafana on the workspace ----------------------------------
    if (cfg.managedGrafana) {
      const role = new iam.Role(this, 'GrafanaRole', {
        assumedBy: new iam.ServicePrincipal('grafana.amazonaws.com', {
          conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
        }),
        description: 'Amazon Managed Grafana reads the Tributary AMP workspace',
      });
      role.addToPrincipalPolicy(new iam.PolicyStatement({
        sid: 'QueryTheWorkspace',
        actions: ['aps:QueryMetrics', 'aps:GetSeries', 'aps:GetLabels', 'aps:GetMetricMetadata'],
        resources: [this.workspace.attrArn],
      }));
      role.addToPrincipalPolicy(new iam.PolicyStatement({
        sid: 'FindTheWorkspace',
        actions: ['aps:ListWorkspaces', 'aps:DescribeWorkspace'],
        resources: ['*'],
      }));
      this.grafana = new grafana.CfnWorkspace(this, 'Grafana', {
        name: cfg.name,
        description: 'Tributary dashboards (deploy/monitoring/grafana/dashboards)',
        accountAccessType: 'CURRENT_ACCOUNT',
        authenticationProviders: ['AWS_SSO'],
        permissionType: 'CUSTOMER_MANAGED',
        roleArn: role.roleArn,
        dataSources: ['PROMETHEUS'],
        // The dashboards are Grafana 10's (schemaVersion 39); service accounts need 9 or later.
        grafanaVersion: GRAFANA_VERSION,
      });
      // The data source and the four dashboards, from the same files as the local Grafana's.
      this.dashboards = new GrafanaDashboards(this, 'GrafanaDashboards', {
        workspace: this.grafana,
        prometheus: this.workspace,
        name: cfg.name,
        scrapeInterval: SCRAPE_INTERVAL,
        logGroup: props.services.logGroup('grafana-provisioner'),
      });
    }
  }
}

/** The alert manager: every alert to the SNS topic, grouped per alert name and labels. */
export function alertManagerDefinition(topicArn: string, region: string): string {
  return [
    'alertmanager_config: |',
    '  route:',
    '    receiver: sns',
    '    group_by: [alertname, job, topic, instance]',
    '    group_wait: 30s',
    '    group_interval: 5m',
    '    repeat_interval: 4h',
    '  receivers:',
    '    - name: sns',
    '      sns_configs:',
    `        - topic_arn: ${topicArn}`,
    '          send_resolved: true',
    '          sigv4:',
    `            region: ${region}`,
    '          subject: "[{{ .Status }}] {{ .CommonLabels.alertname }}"',
    '',
  ].join('\n');
}

/**
 * The DNS domain of MSK's brokers, which are b-1 ... b-N in it: the first bootstrap broker
 * (`b-2.<cluster>.<id>.c<n>.kafka.<region>.amazonaws.com:9096`, eight labels) without its first
 * label, built with CloudFormation functions since the bootstrap string is only known at deploy
 * time.
 */
export function mskBrokerDomain(bootstrapServers: string): string {
  const first = Fn.select(0, Fn.split(',', bootstrapServers));
  const host = Fn.select(0, Fn.split(':', first, 2));
  const labels = Fn.split('.', host, 8);
  return Fn.join('.', [1, 2, 3, 4, 5, 6, 7].map((i) => Fn.select(i, labels)));
}

/**
 * The MSK JMX exporter series the collector keeps, as `<metric>;<name label>`: those that
 * deploy/monitoring/rules/msk.yml reads (infra/test/observability.test.ts checks the two agree).
 */
export const MSK_KEEP = [
  'kafka_server_BrokerTopicMetrics_Count;(MessagesInPerSec|BytesInPerSec|BytesOutPerSec)',
  'kafka_server_ReplicaManager_Value;(PartitionCount|LeaderCount|UnderReplicatedPartitions)',
  'kafka_controller_KafkaController_Value;(OfflinePartitionsCount|ActiveControllerCount)',
  'kafka_network_RequestMetrics_Count;RequestsPerSec',
  'kafka_network_RequestMetrics_(50|99)thPercentile;TotalTimeMs',
  'kafka_log_Log_Value;Size',
  'jvm_memory_bytes_used;',
].join('|');
/** The node exporter series kept: CPU, memory, file systems, network. */
export const NODE_KEEP = 'node_cpu_seconds_total|node_memory_(MemAvailable|MemTotal)_bytes|node_filesystem_(avail|size)_bytes|node_network_(receive|transmit)_bytes_total|node_load1';

export interface AdotTargets {
  readonly region: string;
  readonly remoteWriteUrl: string;
  readonly gateway: string[];
  readonly processors: string[];
  readonly brokers: string[];
}

/**
 * The collector's configuration: a Prometheus receiver with the job names the rules and
 * dashboards rely on (deploy/monitoring/prometheus.yml: gateway, processor, kafka), remote
 * written to AMP with SigV4. JSON, which is YAML.
 */
export function adotConfig(t: AdotTargets): Record<string, unknown> {
  const dns = (names: string[], port: number) => [{ names, type: 'A', port, refresh_interval: '30s' }];
  return {
    extensions: {
      health_check: { endpoint: `0.0.0.0:${COLLECTOR_HEALTH_PORT}` },
      sigv4auth: { region: t.region, service: 'aps' },
    },
    receivers: {
      prometheus: {
        config: {
          global: { scrape_interval: SCRAPE_INTERVAL, scrape_timeout: '10s' },
          scrape_configs: [
            { job_name: 'gateway', dns_sd_configs: dns(t.gateway, GATEWAY_PORT) },
            { job_name: 'processor', dns_sd_configs: dns(t.processors, PROCESSOR_PORT) },
            {
              job_name: 'kafka',
              static_configs: [{ targets: t.brokers.map((b) => `${b}:${MSK_JMX_EXPORTER_PORT}`) }],
              // MSK's exporter serves every MBean: tens of thousands of series a broker. Keep
              // the ones deploy/monitoring/rules/msk.yml maps (AMP bills per sample).
              metric_relabel_configs: [{ source_labels: ['__name__', 'name'], separator: ';', regex: MSK_KEEP, action: 'keep' }],
            },
            {
              job_name: 'kafka-node',
              static_configs: [{ targets: t.brokers.map((b) => `${b}:${MSK_NODE_EXPORTER_PORT}`) }],
              // CPU, memory, disk and network of the broker hosts.
              metric_relabel_configs: [{ source_labels: ['__name__'], regex: NODE_KEEP, action: 'keep' }],
            },
          ],
        },
      },
    },
    processors: { batch: { timeout: '30s' } },
    exporters: {
      prometheusremotewrite: {
        endpoint: t.remoteWriteUrl,
        auth: { authenticator: 'sigv4auth' },
        resource_to_telemetry_conversion: { enabled: false },
      },
    },
    service: {
      extensions: ['health_check', 'sigv4auth'],
      pipelines: { metrics: { receivers: ['prometheus'], processors: ['batch'], exporters: ['prometheusremotewrite'] } },
    },
  };
}
