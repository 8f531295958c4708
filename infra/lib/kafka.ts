// Kafka: the MSK cluster and its SCRAM users.
//
// - Brokers: `brokerCount` (3) × `brokerInstanceType` (kafka.m5.large), one per zone, in the
//   isolated subnets, no public access.
// - Clients authenticate with SASL/SCRAM-SHA-512 only (no IAM, no unauthenticated access) over
//   TLS (port 9096); brokers replicate over TLS too. Data at rest is encrypted with a
//   customer-managed KMS key.
// - SCRAM users are Secrets Manager secrets whose names start with `AmazonMSK_` and that are
//   encrypted with a customer-managed key: MSK refuses anything else. Their passwords are
//   generated at deploy time and associated with the cluster here, so no one types them.
// - Open monitoring: the Prometheus JMX exporter (port 11001) and node exporter (11002) run on
//   every broker. Nothing can reach them until a scraper's security group is allowed in (see
//   docs/aws.md).
// - MSK has no CloudFormation attribute for the bootstrap brokers: a custom resource asks the
//   MSK API once (GetBootstrapBrokers) and the services read the SASL/SCRAM string from it.
import { CfnOutput, CfnResource, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as msk from 'aws-cdk-lib/aws-msk';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { skipChecks } from './checkov';
import { TributaryConfig } from './config';

export interface KafkaProps {
  readonly config: TributaryConfig;
  readonly vpc: ec2.IVpc;
  readonly securityGroup: ec2.ISecurityGroup;
  /** Encrypts the broker log group. */
  readonly logKey: kms.IKey;
}

/**
 * Broker settings. MSK's defaults for a three-zone cluster are close; they are written out so
 * that what the platform relies on is visible and reviewed.
 */
export const SERVER_PROPERTIES = [
  // Topics come from the catalog (`tributary topics apply`), never from a typo in a producer.
  'auto.create.topics.enable=false',
  // Every write is acknowledged by two of three replicas (the producers use acks=all): losing
  // one broker loses no acknowledged write and does not stop writes.
  'default.replication.factor=3',
  'min.insync.replicas=2',
  'offsets.topic.replication.factor=3',
  'transaction.state.log.replication.factor=3',
  'transaction.state.log.min.isr=2',
  'unclean.leader.election.enable=false',
  // Seven days, the retention the processor's recovery by replay and Connect's restarts assume.
  'log.retention.hours=168',
  // A consumer group's committed offsets (the processor's checkpoints) are kept 14 days after
  // its last member left: twice the longest stop the platform supports, which is the source
  // topics' seven-day retention (docs/operations.md). Kafka's default is seven days, so a stop
  // of exactly the input's retention would lose both.
  'offsets.retention.minutes=20160',
  // Both SCRAM users are the platform's own; without ACLs each may use every topic. Add ACLs
  // (kafka-acls with the SCRAM users) before giving a third party a user (docs/aws.md).
  'allow.everyone.if.no.acl.found=true',
  // Lets consumers that set client.rack read from a replica in their own zone.
  'replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector',
].join('\n');

export class Kafka extends Construct {
  readonly cluster: msk.CfnCluster;
  readonly clusterName: string;
  readonly key: kms.Key;
  /** SCRAM user of the gateway, registry, processor and one-off tasks: JSON {username, password}. */
  readonly appsUser: secretsmanager.Secret;
  /** SCRAM user of the Kafka Connect workers. */
  readonly connectUser: secretsmanager.Secret;
  /** `b-1.<cluster>...:9096,b-2...:9096,...`, resolved at deploy time. */
  readonly bootstrapServers: string;

  constructor(scope: Construct, id: string, props: KafkaProps) {
    super(scope, id);
    const cfg = props.config;
    this.clusterName = cfg.name;

    this.key = new kms.Key(this, 'Key', {
      alias: `alias/${cfg.name}/kafka`,
      description: `${cfg.name}: MSK data at rest and the SCRAM user secrets`,
      enableKeyRotation: true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    const brokerLogs = new logs.LogGroup(this, 'BrokerLogs', {
      logGroupName: `/${cfg.name}/msk/brokers`,
      retention: cfg.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.logKey,
      removalPolicy: RemovalPolicy.DESTROY,
    });

    const configuration = new msk.CfnConfiguration(this, 'Configuration', {
      name: `${cfg.name}-brokers`,
      description: 'Tributary broker settings (infra/lib/kafka.ts)',
      serverProperties: SERVER_PROPERTIES,
    });

    const subnets = props.vpc.selectSubnets({ subnetType: ec2.SubnetType.PRIVATE_ISOLATED });
    this.cluster = new msk.CfnCluster(this, 'Cluster', {
      clusterName: this.clusterName,
      kafkaVersion: cfg.kafkaVersion,
      numberOfBrokerNodes: cfg.brokerCount,
      brokerNodeGroupInfo: {
        instanceType: cfg.brokerInstanceType,
        clientSubnets: subnets.subnetIds,
        securityGroups: [props.securityGroup.securityGroupId],
        storageInfo: { ebsStorageInfo: { volumeSize: cfg.brokerVolumeGiB } },
        connectivityInfo: { publicAccess: { type: 'DISABLED' } },
      },
      clientAuthentication: {
        sasl: { scram: { enabled: true }, iam: { enabled: false } },
        unauthenticated: { enabled: false },
      },
      encryptionInfo: {
        encryptionAtRest: { dataVolumeKmsKeyId: this.key.keyArn },
        encryptionInTransit: { clientBroker: 'TLS', inCluster: true },
      },
      configurationInfo: { arn: configuration.attrArn, revision: configuration.attrLatestRevisionRevision },
      enhancedMonitoring: 'DEFAULT',
      openMonitoring: {
        prometheus: {
          jmxExporter: { enabledInBroker: true },
          nodeExporter: { enabledInBroker: true },
        },
      },
      loggingInfo: {
        brokerLogs: { cloudWatchLogs: { enabled: true, logGroup: brokerLogs.logGroupName } },
      },
    });
    // Deleting the stack must not delete the data: the cluster stays and is removed by hand.
    this.cluster.applyRemovalPolicy(RemovalPolicy.RETAIN);

    // Storage grows by itself when a broker's disk passes 70 %, up to brokerVolumeMaxGiB; it
    // never shrinks (EBS cannot). Without a role ARN, Application Auto Scaling uses its
    // service-linked role for MSK.
    const storageTarget = new autoscaling.CfnScalableTarget(this, 'StorageScaling', {
      serviceNamespace: 'kafka',
      scalableDimension: 'kafka:broker-storage:VolumeSize',
      resourceId: this.cluster.attrArn,
      minCapacity: 1,
      maxCapacity: cfg.brokerVolumeMaxGiB,
    });
    new autoscaling.CfnScalingPolicy(this, 'StorageScalingPolicy', {
      policyName: `${cfg.name}-broker-storage`,
      policyType: 'TargetTrackingScaling',
      scalingTargetId: storageTarget.ref,
      targetTrackingScalingPolicyConfiguration: {
        targetValue: 70,
        disableScaleIn: true,
        predefinedMetricSpecification: { predefinedMetricType: 'KafkaBrokerStorageUtilization' },
      },
    });

    const scramUser = (userId: string, suffix: string, username: string) =>
      new secretsmanager.Secret(this, userId, {
        secretName: `AmazonMSK_${cfg.name}-${suffix}`,
        description: `${cfg.name}: SASL/SCRAM user ${username} of the MSK cluster`,
        encryptionKey: this.key,
        removalPolicy: RemovalPolicy.RETAIN,
        generateSecretString: {
          secretStringTemplate: JSON.stringify({ username }),
          generateStringKey: 'password',
          passwordLength: 32,
          // The password ends up inside a JAAS line (Connect) and librdkafka properties: keep it
          // to letters and digits so that no quoting can break it.
          excludePunctuation: true,
        },
      });
    this.appsUser = scramUser('AppsScramUser', 'apps', cfg.name);
    this.connectUser = scramUser('ConnectScramUser', 'connect', `${cfg.name}-connect`);

    const association = new msk.CfnBatchScramSecret(this, 'ScramUsers', {
      clusterArn: this.cluster.attrArn,
      secretArnList: [this.appsUser.secretArn, this.connectUser.secretArn],
    });

    const lookupLogs = new logs.LogGroup(this, 'BootstrapLookupLogs', {
      retention: cfg.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.logKey,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const lookup = new cr.AwsCustomResource(this, 'BootstrapBrokers', {
      // Runs at create and on every change of the cluster's ARN (a replacement).
      onUpdate: {
        service: 'Kafka',
        action: 'getBootstrapBrokers',
        parameters: { ClusterArn: this.cluster.attrArn },
        physicalResourceId: cr.PhysicalResourceId.of(this.cluster.attrArn),
        outputPaths: ['BootstrapBrokerStringSaslScram'],
      },
      policy: cr.AwsCustomResourcePolicy.fromSdkCalls({ resources: [this.cluster.attrArn] }),
      // The SDK in the Lambda runtime has this call; downloading a newer one at deploy is not needed.
      installLatestAwsSdk: false,
      logGroup: lookupLogs,
      timeout: Duration.minutes(2),
    });
    // Everything that reads the bootstrap servers (every task) then also waits until the SCRAM
    // users are associated: a task that started earlier would fail to authenticate.
    lookup.node.addDependency(association);
    this.bootstrapServers = lookup.getResponseField('BootstrapBrokerStringSaslScram');
    // The Lambda function behind every AwsCustomResource of the stack (CDK makes one, a singleton).
    const provider = Stack.of(this).node.tryFindChild(`AWS${cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace(/-/g, '')}`);
    if (provider) {
      // CDK's generated function names its role both in DependsOn and through GetAtt.
      (provider.node.defaultChild as CfnResource).addMetadata('cfn-lint', { config: { ignore_checks: ['W3005'] } });
      skipChecks(provider, {
        CKV_AWS_115: 'runs once per deployment, called by CloudFormation: a concurrency limit protects nothing',
        CKV_AWS_116: 'CloudFormation waits for its answer and fails the deployment on an error: a DLQ would hold nothing useful',
        CKV_AWS_117: 'it only calls the public MSK API (GetBootstrapBrokers); inside the VPC it would need NAT for the same call',
      });
    }

    const stack = Stack.of(this);
    new CfnOutput(stack, 'KafkaClusterArn', { value: this.cluster.attrArn });
    new CfnOutput(stack, 'KafkaBootstrapServers', {
      value: this.bootstrapServers,
      description: 'SASL/SCRAM over TLS (port 9096)',
    });
  }
}
