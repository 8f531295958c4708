// ECS on Fargate: the cluster, the internal services of the `tributary` image (schema registry,
// stream processor), the one-off `tributary topics apply` task and the pieces every task shares
// (Kafka settings, secrets, log groups, health checks). The public gateway and its ALB are in
// gateway.ts, Kafka Connect in connect.ts.
//
// Every task runs in the private subnets without a public IP, with a read-only root file
// system, and gets its credentials from Secrets Manager as ECS `secrets` (resolved by the ECS
// agent when the task starts): no secret is in a task definition's environment.
//
// Processor slots: each processor instance needs its own `--instance` slot, kept across
// restarts, never shared by two running instances (docs/processor.md#scaling-out). ECS gives a
// task no stable ordinal, so each slot is a service of its own (`processor-0` ...
// `processor-<N-1>`, desired count 1) whose deployments stop the old task before starting the
// new one (minimum healthy 0 %, maximum 100 %): a slot never runs twice. Each slot's service
// depends on the previous one's, so CloudFormation rolls them one after the other.
import { CfnOutput, Duration, Fn, RemovalPolicy, Size, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as servicediscovery from 'aws-cdk-lib/aws-servicediscovery';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';
import { Kafka } from './kafka';
import { Network, PROCESSOR_PORT, REGISTRY_PORT } from './network';
import { Storage } from './storage';

/** The processor's consumer group (`[processor] group_id`), also watched for lag. */
export const PROCESSOR_GROUP = 'tributary-processor';

export interface ServicesProps {
  readonly config: TributaryConfig;
  readonly network: Network;
  readonly kafka: Kafka;
  readonly storage: Storage;
  readonly tributaryRepo: ecr.IRepository;
}

export class Services extends Construct {
  readonly cluster: ecs.Cluster;
  readonly namespace: servicediscovery.PrivateDnsNamespace;
  /** Basic auth of the schema registry: JSON {username, password}. */
  readonly registryAuth: secretsmanager.Secret;
  readonly registryUrl: string;
  readonly registry: ecs.FargateService;
  readonly processors: ecs.FargateService[] = [];
  readonly topicsTask: ecs.FargateTaskDefinition;
  readonly image: ecs.ContainerImage;
  /** Encrypts the application secrets. */
  readonly platformKey: kms.IKey;
  private readonly props: ServicesProps;

  constructor(scope: Construct, id: string, props: ServicesProps) {
    super(scope, id);
    this.props = props;
    this.platformKey = props.storage.platformKey;
    const cfg = props.config;
    const net = props.network;

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      vpc: net.vpc,
      clusterName: cfg.name,
      // Gives ECS/ContainerInsights RunningTaskCount, which the service alarms watch.
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });
    this.namespace = new servicediscovery.PrivateDnsNamespace(this, 'Namespace', {
      name: `${cfg.name}.internal`,
      vpc: net.vpc,
      description: 'Tributary internal services (registry, connect)',
    });
    this.image = ecs.ContainerImage.fromEcrRepository(props.tributaryRepo, cfg.imageTag);

    this.registryAuth = new secretsmanager.Secret(this, 'RegistryAuth', {
      secretName: `${cfg.name}/registry-auth`,
      description: 'Basic auth of the Tributary schema registry: {"username", "password"}',
      encryptionKey: props.storage.platformKey,
      removalPolicy: RemovalPolicy.RETAIN,
      generateSecretString: {
        secretStringTemplate: JSON.stringify({ username: cfg.name }),
        generateStringKey: 'password',
        passwordLength: 32,
        excludePunctuation: true,
      },
    });
    this.registryUrl = `http://registry.${this.namespace.namespaceName}:${REGISTRY_PORT}`;

    // --- Schema registry ------------------------------------------------------------------
    const registryTask = this.taskDefinition('Registry', 'registry', cfg.registryCpu, cfg.registryMemoryMiB);
    const registryLogs = this.logGroup('registry');
    registryTask.addContainer('registry', {
      ...this.tributaryContainer('registry', registryLogs),
      command: ['registry'],
      environment: {
        ...this.kafkaEnvironment('registry'),
        TRIBUTARY_REGISTRY__LISTEN: `0.0.0.0:${REGISTRY_PORT}`,
        // The `_schemas` topic the registry creates on first start: as durable as the rest.
        TRIBUTARY_REGISTRY__REPLICATION_FACTOR: '3',
      },
      secrets: {
        ...this.kafkaSecrets(),
        TRIBUTARY_REGISTRY__AUTH_USER: ecs.Secret.fromSecretsManager(this.registryAuth, 'username'),
        TRIBUTARY_REGISTRY__AUTH_PASSWORD: ecs.Secret.fromSecretsManager(this.registryAuth, 'password'),
      },
      portMappings: [{ containerPort: REGISTRY_PORT, name: 'registry' }],
      // GET /subjects answers 401 without credentials once the registry serves.
      healthCheck: httpHealthCheck(REGISTRY_PORT, '/subjects', [200, 401], Duration.seconds(60)),
    });
    this.registry = this.service('Registry', 'registry', registryTask, net.registrySg, cfg.registryCount, {
      cloudMapOptions: {
        name: 'registry',
        cloudMapNamespace: this.namespace,
        dnsRecordType: servicediscovery.DnsRecordType.A,
        dnsTtl: Duration.seconds(10),
      },
    });

    // --- Stream processor: one service per slot ------------------------------------------
    const processorLogs = this.logGroup('processor');
    for (let slot = 0; slot < cfg.processorInstances; slot++) {
      const task = this.taskDefinition(`Processor${slot}`, `processor-${slot}`, cfg.processorCpu, cfg.processorMemoryMiB);
      const topics = this.addTopicsApply(task, processorLogs);
      const container = task.addContainer('processor', {
        ...this.tributaryContainer(`processor-${slot}`, processorLogs),
        command: ['processor', '--instance', String(slot)],
        environment: {
          ...this.kafkaEnvironment(`processor-${slot}`),
          TRIBUTARY_PROCESSOR__LISTEN: `0.0.0.0:${PROCESSOR_PORT}`,
          TRIBUTARY_PROCESSOR__GROUP_ID: PROCESSOR_GROUP,
          TRIBUTARY_PROCESSOR__REGISTRY__URL: this.registryUrl,
        },
        secrets: {
          ...this.kafkaSecrets(),
          TRIBUTARY_PROCESSOR__REGISTRY__USER: ecs.Secret.fromSecretsManager(this.registryAuth, 'username'),
          TRIBUTARY_PROCESSOR__REGISTRY__PASSWORD: ecs.Secret.fromSecretsManager(this.registryAuth, 'password'),
        },
        portMappings: [{ containerPort: PROCESSOR_PORT, name: 'metrics' }],
        // /health/live answers once reference data is loaded (up to 30 s), and then 200 unless
        // the loop hangs: a processor waiting for Kafka between rebuilds is not replaced.
        healthCheck: httpHealthCheck(PROCESSOR_PORT, '/health/live', [200], Duration.seconds(120)),
        // SIGTERM commits the open transaction and leaves the group.
        stopTimeout: Duration.seconds(30),
      });
      container.addContainerDependencies({ container: topics, condition: ecs.ContainerDependencyCondition.SUCCESS });
      const service = this.service(`Processor${slot}`, `processor-${slot}`, task, net.processorSg, 1, {
        minHealthyPercent: 0,
        maxHealthyPercent: 100,
        // processor-<slot>.<name>.internal: how the metrics collector finds it (observability.ts).
        cloudMapOptions: {
          name: `processor-${slot}`,
          cloudMapNamespace: this.namespace,
          dnsRecordType: servicediscovery.DnsRecordType.A,
          dnsTtl: Duration.seconds(10),
        },
      });
      // One slot at a time: CloudFormation updates a slot's service only once the previous
      // slot's is stable again, so a deployment pauses one slot's partitions, not all of them.
      const previous = this.processors[this.processors.length - 1];
      if (previous) service.node.addDependency(previous);
      this.processors.push(service);
    }

    // --- One-off: tributary topics apply -------------------------------------------------
    this.topicsTask = this.taskDefinition('Topics', 'topics', 256, 512);
    this.addTopicsApply(this.topicsTask, this.logGroup('topics'), true);

    const stack = Stack.of(this);
    new CfnOutput(stack, 'RunTopicsApply', {
      description: 'Creates the missing catalog topics (docs/aws.md#topics)',
      value: this.runTaskCommand(this.topicsTask, net.adminSg),
    });
  }

  /** An `aws ecs run-task` command line that runs a one-off task in the private subnets. */
  runTaskCommand(task: ecs.FargateTaskDefinition, securityGroup: ec2.ISecurityGroup): string {
    const subnets = this.props.network.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS }).subnetIds;
    return Fn.join('', [
      `aws ecs run-task --cluster ${this.props.config.name} --launch-type FARGATE --task-definition ${task.family} `,
      '--network-configuration "awsvpcConfiguration={subnets=[',
      Fn.join(',', subnets),
      '],securityGroups=[',
      securityGroup.securityGroupId,
      '],assignPublicIp=DISABLED}"',
    ]);
  }

  /** A log group per service, encrypted, with the configured retention. */
  logGroup(service: string): logs.LogGroup {
    return new logs.LogGroup(this, `Logs-${service}`, {
      logGroupName: `/${this.props.config.name}/${service}`,
      retention: this.props.config.logRetentionDays as logs.RetentionDays,
      encryptionKey: this.props.storage.platformKey,
      removalPolicy: RemovalPolicy.DESTROY,
    });
  }

  taskDefinition(id: string, family: string, cpu: number, memoryMiB: number): ecs.FargateTaskDefinition {
    return new ecs.FargateTaskDefinition(this, `${id}Task`, {
      family: `${this.props.config.name}-${family}`,
      cpu,
      memoryLimitMiB: memoryMiB,
      runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.X86_64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });
  }

  /** What every container of the `tributary` image has in common. */
  tributaryContainer(streamPrefix: string, logGroup: logs.ILogGroup) {
    return {
      image: this.image,
      logging: awsLogs(streamPrefix, logGroup),
      readonlyRootFilesystem: true,
    };
  }

  /** Kafka settings of a `tributary` container (docs/configuration.md, `[kafka]`). */
  kafkaEnvironment(clientId: string): Record<string, string> {
    return {
      TRIBUTARY_KAFKA__BOOTSTRAP_SERVERS: this.props.kafka.bootstrapServers,
      TRIBUTARY_KAFKA__SECURITY_PROTOCOL: 'sasl_ssl',
      TRIBUTARY_KAFKA__SASL_MECHANISM: 'SCRAM-SHA-512',
      // MSK's certificates chain to Amazon's public roots, which the image's ca-certificates has.
      TRIBUTARY_KAFKA__SSL_CA_LOCATION: '/etc/ssl/certs/ca-certificates.crt',
      TRIBUTARY_KAFKA__CLIENT_ID: `${this.props.config.name}-${clientId}`,
      TRIBUTARY_LOG_FORMAT: 'json',
    };
  }

  /** The SCRAM user, from its secret: never in the environment. */
  kafkaSecrets(): Record<string, ecs.Secret> {
    return {
      TRIBUTARY_KAFKA__SASL_USERNAME: ecs.Secret.fromSecretsManager(this.props.kafka.appsUser, 'username'),
      TRIBUTARY_KAFKA__SASL_PASSWORD: ecs.Secret.fromSecretsManager(this.props.kafka.appsUser, 'password'),
    };
  }

  /**
   * `tributary topics apply --replication-factor 3`: creates the catalog topics that are missing
   * and leaves the others alone (creating one another task just created is not an error). As a
   * non-essential first container it makes a first deployment converge without a manual step:
   * the gateway's health and the processor need the topics.
   */
  addTopicsApply(task: ecs.FargateTaskDefinition, logGroup: logs.ILogGroup, essential = false): ecs.ContainerDefinition {
    return task.addContainer('topics', {
      ...this.tributaryContainer('topics', logGroup),
      essential,
      command: ['topics', 'apply', '--replication-factor', '3'],
      environment: this.kafkaEnvironment('topics'),
      secrets: this.kafkaSecrets(),
    });
  }

  service(
    id: string,
    name: string,
    task: ecs.FargateTaskDefinition,
    securityGroup: ec2.ISecurityGroup,
    desiredCount: number,
    extra: Partial<ecs.FargateServiceProps> = {},
  ): ecs.FargateService {
    return new ecs.FargateService(this, id, {
      cluster: this.cluster,
      serviceName: name,
      taskDefinition: task,
      desiredCount,
      securityGroups: [securityGroup],
      assignPublicIp: false,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      circuitBreaker: { enable: true, rollback: true },
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      enableECSManagedTags: true,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      ...extra,
    });
  }
}

export function awsLogs(streamPrefix: string, logGroup: logs.ILogGroup): ecs.LogDriver {
  // Non-blocking: a slow CloudWatch Logs never stalls a request or a transaction; the buffer
  // holds 25 MiB before lines are dropped.
  return ecs.LogDrivers.awsLogs({ streamPrefix, logGroup, mode: ecs.AwsLogDriverMode.NON_BLOCKING, maxBufferSize: Size.mebibytes(25) });
}

/**
 * A container health check that needs nothing but bash (the `tributary` image has no curl): an
 * HTTP/1.0 request over /dev/tcp, healthy when the status is one of `codes`.
 */
export function httpHealthCheck(port: number, path: string, codes: number[], startPeriod: Duration): ecs.HealthCheck {
  const ok = codes.map((c) => `[ "$code" = ${c} ]`).join(' || ');
  const probe =
    `exec 3<>/dev/tcp/127.0.0.1/${port} && printf 'GET ${path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 ` +
    `&& read -r _ code _ <&3 && { ${ok}; }`;
  // Five misses 20 s apart (100 s) before ECS replaces the task: long enough for the
  // processor's rebuild after a Kafka error, short enough for a hung process.
  return {
    command: ['CMD', 'bash', '-c', probe],
    interval: Duration.seconds(20),
    timeout: Duration.seconds(5),
    retries: 5,
    startPeriod,
  };
}
