// Kafka Connect with the Snowflake sink on ECS: the workers (a service) and the one-off task that
// registers the connector.
//
// The workers run the image of deploy/connect/Dockerfile (Connect 4.3.1, the Snowflake plugin, the
// worker file deploy/connect/connect-distributed.properties and the connector file), in
// distributed mode: they find each other through the Kafka group and forward REST calls to the
// leader on 8083, which only their own security group may reach. Every `${env:...}` of the
// worker and connector files is provided: plain values as variables, credentials as ECS secrets,
// and the two composed values by the start script. No secret is ever in the connector
// configuration or the REST calls: the EnvVarConfigProvider resolves them in each worker
// (docs/deployment.md).
import { CfnOutput, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as servicediscovery from 'aws-cdk-lib/aws-servicediscovery';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';
import { Kafka } from './kafka';
import { CONNECT_PORT, Network } from './network';
import { awsLogs, Services } from './services';
import { Storage } from './storage';

/** Where the Connect image (docs/aws.md) has the worker, its plugin and configuration. */
export const CONNECT_HOME = '/opt/tributary';
/** The Kafka Connect version the image installs (deploy/connect/connect.sh). */
export const CONNECT_VERSION = '4.3.1';

export interface ConnectProps {
  readonly config: TributaryConfig;
  readonly network: Network;
  readonly kafka: Kafka;
  readonly storage: Storage;
  readonly services: Services;
  readonly image: ecs.ContainerImage;
}

export class Connect extends Construct {
  readonly service: ecs.FargateService;
  readonly registerTask: ecs.FargateTaskDefinition;
  /** Snowflake account, user, role, private key and its passphrase: filled in after deploy. */
  readonly snowflake: secretsmanager.Secret;

  constructor(scope: Construct, id: string, props: ConnectProps) {
    super(scope, id);
    const cfg = props.config;
    const services = props.services;
    const logGroup = services.logGroup('connect');

    this.snowflake = new secretsmanager.Secret(this, 'Snowflake', {
      secretName: `${cfg.name}/snowflake`,
      description: 'Kafka Connect to Snowflake: url, user, role, private_key (PKCS#8 body), private_key_passphrase',
      encryptionKey: props.storage.platformKey,
      removalPolicy: RemovalPolicy.RETAIN,
      // Placeholders to replace after deploy (docs/aws.md); the passphrase is generated so that
      // the private key can be encrypted with it.
      generateSecretString: {
        secretStringTemplate: JSON.stringify({
          url: 'CHANGE_ME.snowflakecomputing.com',
          user: 'TRIBUTARY_LOADER',
          role: 'TRIBUTARY_LOADER',
          private_key: 'CHANGE_ME',
        }),
        generateStringKey: 'private_key_passphrase',
        passwordLength: 32,
        excludePunctuation: true,
      },
    });

    const task = services.taskDefinition('Connect', 'connect', cfg.connectCpu, cfg.connectMemoryMiB);
    // Backup and archival: where an S3 sink connector would write topic archives.
    props.storage.archiveBucket.grantReadWrite(task.taskRole);
    task.addVolume({ name: 'tmp' });
    const secret = ecs.Secret.fromSecretsManager;
    const worker = task.addContainer('connect', {
      image: props.image,
      logging: awsLogs('connect', logGroup),
      readonlyRootFilesystem: true,
      entryPoint: ['bash', '-c'],
      command: [connectStartScript(cfg.connectHeapMiB)],
      environment: {
        CONNECT_BOOTSTRAP_SERVERS: props.kafka.bootstrapServers,
        SCHEMA_REGISTRY_URL: services.registryUrl,
        // The JVM, the JDBC driver and the Snowpipe Streaming SDK write their caches under
        // $HOME and java.io.tmpdir: both on the task's scratch volume.
        HOME: '/tmp',
      },
      secrets: {
        CONNECT_SASL_USERNAME: secret(props.kafka.connectUser, 'username'),
        CONNECT_SASL_PASSWORD: secret(props.kafka.connectUser, 'password'),
        SCHEMA_REGISTRY_USER: secret(services.registryAuth, 'username'),
        SCHEMA_REGISTRY_PASSWORD: secret(services.registryAuth, 'password'),
        SNOWFLAKE_URL: secret(this.snowflake, 'url'),
        SNOWFLAKE_USER: secret(this.snowflake, 'user'),
        SNOWFLAKE_ROLE: secret(this.snowflake, 'role'),
        SNOWFLAKE_PRIVATE_KEY: secret(this.snowflake, 'private_key'),
        SNOWFLAKE_PRIVATE_KEY_PASSPHRASE: secret(this.snowflake, 'private_key_passphrase'),
      },
      portMappings: [{ containerPort: CONNECT_PORT, name: 'rest' }],
      // GET /connectors answers once the worker joined its group and read the config topic.
      healthCheck: {
        command: ['CMD', 'curl', '-sf', '-o', '/dev/null', `http://127.0.0.1:${CONNECT_PORT}/connectors`],
        interval: Duration.seconds(30),
        timeout: Duration.seconds(5),
        retries: 3,
        startPeriod: Duration.seconds(240),
      },
      stopTimeout: Duration.seconds(60),
    });
    worker.addMountPoints({ sourceVolume: 'tmp', containerPath: '/tmp', readOnly: false });
    this.service = services.service('Connect', 'connect', task, props.network.connectSg, cfg.connectCount, {
      cloudMapOptions: {
        name: 'connect',
        cloudMapNamespace: services.namespace,
        dnsRecordType: servicediscovery.DnsRecordType.A,
        dnsTtl: Duration.seconds(10),
      },
    });

    // The connector is registered by a one-off task of the same image that calls the workers'
    // REST API through their DNS name (deploy/connect/register.sh). It sends the connector file
    // as it is, so it needs no secret; it shares the workers' security group, the only one
    // allowed to reach 8083.
    this.registerTask = services.taskDefinition('ConnectRegister', 'connect-register', 256, 512);
    this.registerTask.addVolume({ name: 'tmp' });
    const register = this.registerTask.addContainer('register', {
      image: props.image,
      logging: awsLogs('register', logGroup),
      readonlyRootFilesystem: true,
      entryPoint: [`${CONNECT_HOME}/register.sh`],
      command: [`${CONNECT_HOME}/snowflake-sink.json`],
      environment: {
        CONNECT_URL: `http://connect.${services.namespace.namespaceName}:${CONNECT_PORT}`,
        CONNECT_WAIT_SECS: '300',
        // bash may write here-strings to $TMPDIR: the scratch volume.
        HOME: '/tmp',
        TMPDIR: '/tmp',
      },
    });
    register.addMountPoints({ sourceVolume: 'tmp', containerPath: '/tmp', readOnly: false });

    new CfnOutput(Stack.of(this), 'RegisterConnector', {
      description: 'Registers the Snowflake sink with the Connect workers (docs/aws.md); add --overrides for --validate',
      value: services.runTaskCommand(this.registerTask, props.network.connectSg),
    });
  }
}

/**
 * Starts a Connect worker as docs/deployment.md describes, with the two values ECS cannot give
 * as plain variables: the address other workers reach this one at (the task's private IP, from
 * the task metadata endpoint, else the host name's address) and the registry's `user:password`
 * for the Avro converter.
 */
export function connectStartScript(heapMiB: number): string {
  return [
    'ip="$(curl -sf --max-time 2 "$ECS_CONTAINER_METADATA_URI_V4" | jq -r \'.Networks[0].IPv4Addresses[0] // empty\' || true)"',
    'export CONNECT_REST_HOST="${ip:-$(hostname -i | cut -d" " -f1)}"',
    'export SCHEMA_REGISTRY_USER_INFO="$SCHEMA_REGISTRY_USER:$SCHEMA_REGISTRY_PASSWORD"',
    `exec java -Xms${heapMiB}m -Xmx${heapMiB}m -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 ` +
      `-Djava.awt.headless=true -Djava.io.tmpdir=/tmp -Dlog4j2.configurationFile=${CONNECT_HOME}/log4j2.properties ` +
      `-cp '${CONNECT_HOME}/connect-${CONNECT_VERSION}/libs/*' org.apache.kafka.connect.cli.ConnectDistributed ` +
      `${CONNECT_HOME}/connect-distributed.properties`,
  ].join('\n');
}
