// The production stack: everything but the image registries (images.ts), put together from one
// construct per concern. docs/aws.md describes the result; infra/test/*.test.ts pins what users
// rely on.
import * as fs from 'fs';
import * as path from 'path';
import { App, Fn, Stack, StackProps, Tags, Validations } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import { Construct } from 'constructs';
import { readConfig, TributaryConfig } from './config';
import { Connect } from './connect';
import { ImagesStack } from './images';
import { Gateway } from './gateway';
import { Kafka } from './kafka';
import { Monitoring, WatchedGroup } from './monitoring';
import { Network } from './network';
import { Observability } from './observability';
import { PROCESSOR_GROUP, Services } from './services';
import { Storage } from './storage';

/** The processor's default sources (docs/configuration.md, `[[processor.sources]]`). */
export const PROCESSOR_SOURCES = ['events.iot.sensors', 'events.clickstream', 'events.transactions'];

export interface TributaryStackProps extends StackProps {
  readonly config: TributaryConfig;
  /**
   * Names of the ECR repositories (images.ts), referenced by name rather than by a cross-stack
   * export: the images stack can then change without freezing this one.
   */
  readonly tributaryRepoName: string;
  readonly connectRepoName: string;
}

export class TributaryStack extends Stack {
  readonly network: Network;
  readonly storage: Storage;
  readonly kafka: Kafka;
  readonly services: Services;
  readonly connect: Connect;
  readonly gateway: Gateway;
  readonly monitoring: Monitoring;
  readonly observability: Observability;
  private readonly zones: string[];

  constructor(scope: Construct, id: string, props: TributaryStackProps) {
    super(scope, id, props);
    const cfg = props.config;
    this.zones = cfg.availabilityZones ?? [0, 1, 2].map((i) => Fn.select(i, Fn.getAzs()));
    Tags.of(this).add('project', 'tributary');

    this.storage = new Storage(this, 'Storage', { config: cfg });
    this.network = new Network(this, 'Network', { config: cfg, logKey: this.storage.platformKey });
    if (cfg.availabilityZones) {
      Validations.of(this.network).acknowledge({ id: 'CloudFormation-Validate::W3010', reason: 'zones named on purpose (-c availabilityZones)' });
    }
    this.kafka = new Kafka(this, 'Kafka', {
      config: cfg,
      vpc: this.network.vpc,
      securityGroup: this.network.mskSg,
      logKey: this.storage.platformKey,
    });
    this.services = new Services(this, 'Services', {
      config: cfg,
      network: this.network,
      kafka: this.kafka,
      storage: this.storage,
      tributaryRepo: ecr.Repository.fromRepositoryName(this, 'TributaryRepo', props.tributaryRepoName),
    });
    this.connect = new Connect(this, 'Connect', {
      config: cfg,
      network: this.network,
      kafka: this.kafka,
      storage: this.storage,
      services: this.services,
      image: ecs.ContainerImage.fromEcrRepository(
        ecr.Repository.fromRepositoryName(this, 'ConnectRepo', props.connectRepoName),
        cfg.imageTag,
      ),
    });
    this.gateway = new Gateway(this, 'Gateway', {
      config: cfg,
      network: this.network,
      services: this.services,
      storage: this.storage,
    });
    this.monitoring = new Monitoring(this, 'Monitoring', {
      config: cfg,
      key: this.storage.platformKey,
      clusterName: this.kafka.clusterName,
      ecsClusterName: cfg.name,
      alb: this.gateway.alb,
      targetGroup: this.gateway.targetGroup,
      services: [
        { service: this.gateway.service, minRunning: cfg.gatewayCount },
        { service: this.services.registry, minRunning: cfg.registryCount },
        ...this.services.processors.map((service) => ({ service, minRunning: 1 })),
        { service: this.connect.service, minRunning: cfg.connectCount },
      ],
      consumerGroups: [
        { group: PROCESSOR_GROUP, topics: PROCESSOR_SOURCES },
        snowflakeSinkGroup(),
      ],
    });
    this.observability = new Observability(this, 'Observability', {
      config: cfg,
      network: this.network,
      services: this.services,
      bootstrapServers: this.kafka.bootstrapServers,
      topic: this.monitoring.topic,
      topicKey: this.storage.platformKey,
    });
    // A collector that is down blinds every Prometheus rule: it alarms through CloudWatch.
    this.monitoring.watchService(this.observability.collector, 1);
  }

  /**
   * Three zones, named by context or the region's first three at deploy time: synth never asks
   * the account which zones it has (offline), and a stack with an account still gets three.
   */
  get availabilityZones(): string[] {
    return this.zones;
  }
}

/**
 * The Snowflake sink's consumer group and topics, read from the connector configuration that
 * Connect runs (deploy/connect/snowflake-sink.json), so that the lag alarms follow it. A sink
 * connector's group is `connect-<connector name>`.
 */
export function snowflakeSinkGroup(): WatchedGroup {
  const file = path.join(__dirname, '..', '..', 'deploy', 'connect', 'snowflake-sink.json');
  const connector = JSON.parse(fs.readFileSync(file, 'utf8')) as { name: string; config: { topics: string } };
  return {
    group: `connect-${connector.name}`,
    topics: connector.config.topics.split(',').map((t) => t.trim()).filter((t) => t.length > 0),
  };
}

/**
 * The app's two stacks, from the app's context: `<Name>Images` (ECR) and `<Name>` (the platform),
 * which depends on it. bin/tributary.ts and the tests both build the app through this.
 */
export function buildApp(app: App, env: NodeJS.ProcessEnv = process.env) {
  const config = readConfig((key) => app.node.tryGetContext(key), env);
  const stackEnv = { account: config.account, region: config.region };
  const stackName = config.name.split('-').map((p) => p.charAt(0).toUpperCase() + p.slice(1)).join('');
  const images = new ImagesStack(app, `${stackName}Images`, {
    env: stackEnv,
    config,
    description: 'Tributary container registries (infra/lib/images.ts)',
    analyticsReporting: false,
  });
  const platform = new TributaryStack(app, stackName, {
    env: stackEnv,
    config,
    tributaryRepoName: images.tributaryName,
    connectRepoName: images.connectName,
    description: 'Tributary event streaming platform: MSK, ECS Fargate, ALB, S3, CloudWatch (infra/)',
    analyticsReporting: false,
  });
  platform.addStackDependency(images);
  return { config, images, platform };
}
