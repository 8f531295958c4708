// The public entrance: an internet-facing Application Load Balancer in the public subnets and
// the gateway service behind it, in the private subnets.
//
// - HTTPS on 443 with the ACM certificate given as `certificateArn`, TLS 1.2+ (ELB's recommended
//   TLS 1.3 policy); HTTP on 80 only answers a permanent redirect to HTTPS.
// - The ALB forwards to the gateway tasks on 8080 and checks GET /api/v1/health/live (liveness),
//   which is 200 while the process serves, whatever Kafka's state; the container health check
//   asks the same. Readiness (/api/v1/health, 503 while Kafka is down) is never used to replace
//   a task: during a broker outage every gateway stays, keeps its dedupe window and answers 503
//   with Retry-After, instead of ECS recycling them and the ALB answering with its own errors.
// - JWT (the spec's API authentication, docs/api.md#authentication): by default the gateway
//   verifies bearer tokens with an HMAC secret generated in Secrets Manager (`<name>/gateway-jwt`,
//   injected as an ECS secret) and enforces the events:write / events:read scopes; with
//   `gatewayJwt=public-key` it verifies an IdP's tokens with the IdP's public key instead. With
//   `jwksEndpoint` (and `jwtIssuer`) the HTTPS listener also verifies the token against the
//   IdP's JWKS before forwarding, so unauthenticated traffic never reaches a task. With
//   `gatewayJwt=off` and no JWKS the API is open to `ingressCidrs`, and synth says so.
// - Access logs go to the access-log bucket; invalid header fields are dropped; /metrics is
//   answered 404 by the ALB (Prometheus scrapes it from inside the VPC).
// - The service scales between gatewayCount and gatewayMaxCount tasks on CPU.
import { Annotations, CfnOutput, Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as servicediscovery from 'aws-cdk-lib/aws-servicediscovery';
import { Construct } from 'constructs';
import { skipChecks } from './checkov';
import { TributaryConfig } from './config';
import { GATEWAY_PORT, Network } from './network';
import { httpHealthCheck, Services } from './services';
import { Storage } from './storage';

/** The ALB's idle timeout, in seconds; the gateway keeps idle connections longer. */
export const ALB_IDLE_TIMEOUT_SECS = 60;
/** The gateway's `header_timeout_ms`: above the ALB's idle timeout. */
export const GATEWAY_HEADER_TIMEOUT_MS = 65_000;

/** The gateway's liveness endpoint, as the ALB and the container health check ask it. */
export const HEALTH_CHECK_PATH = '/api/v1/health/live';

export interface GatewayProps {
  readonly config: TributaryConfig;
  readonly network: Network;
  readonly services: Services;
  readonly storage: Storage;
}

export class Gateway extends Construct {
  readonly alb: elbv2.ApplicationLoadBalancer;
  readonly targetGroup: elbv2.ApplicationTargetGroup;
  readonly service: ecs.FargateService;
  /** The HMAC key of the API's tokens (gatewayJwt=hmac). */
  jwtSecret?: secretsmanager.Secret;

  constructor(scope: Construct, id: string, props: GatewayProps) {
    super(scope, id);
    const cfg = props.config;
    const services = props.services;

    const task = services.taskDefinition('Gateway', 'gateway', cfg.gatewayCpu, cfg.gatewayMemoryMiB);
    const logGroup = services.logGroup('gateway');
    const topics = services.addTopicsApply(task, logGroup);
    const auth = this.authSettings(cfg, services);
    const gateway = task.addContainer('gateway', {
      ...services.tributaryContainer('gateway', logGroup),
      command: ['gateway'],
      environment: {
        ...services.kafkaEnvironment('gateway'),
        TRIBUTARY_GATEWAY__LISTEN: `0.0.0.0:${GATEWAY_PORT}`,
        // Idle keep-alive connections must outlive the ALB's (60 s), or the ALB may reuse one
        // the gateway is closing and answer 502.
        TRIBUTARY_GATEWAY__HEADER_TIMEOUT_MS: String(GATEWAY_HEADER_TIMEOUT_MS),
        // Rate limits without authentication count clients by address: the ALB appends the
        // client's to X-Forwarded-For, and the gateways' security group admits only the ALB, so
        // the last entry is trustworthy here (docs/security.md).
        TRIBUTARY_GATEWAY__RATE_LIMIT__TRUST_FORWARDED_FOR: 'true',
        TRIBUTARY_GATEWAY__REGISTRY__URL: services.registryUrl,
        ...auth.environment,
      },
      secrets: {
        ...services.kafkaSecrets(),
        TRIBUTARY_GATEWAY__REGISTRY__USER: ecs.Secret.fromSecretsManager(services.registryAuth, 'username'),
        TRIBUTARY_GATEWAY__REGISTRY__PASSWORD: ecs.Secret.fromSecretsManager(services.registryAuth, 'password'),
        ...auth.secrets,
      },
      portMappings: [{ containerPort: GATEWAY_PORT, name: 'http' }],
      healthCheck: httpHealthCheck(GATEWAY_PORT, HEALTH_CHECK_PATH, [200], Duration.seconds(60)),
      // shutdown_grace_secs is 30: in-flight requests finish and the producer flushes first.
      stopTimeout: Duration.seconds(40),
    });
    gateway.addContainerDependencies({ container: topics, condition: ecs.ContainerDependencyCondition.SUCCESS });

    this.service = services.service('Gateway', 'gateway', task, props.network.gatewaySg, cfg.gatewayCount, {
      healthCheckGracePeriod: Duration.seconds(60),
      // gateway.<name>.internal: how the metrics collector finds every task (observability.ts).
      cloudMapOptions: {
        name: 'gateway',
        cloudMapNamespace: services.namespace,
        dnsRecordType: servicediscovery.DnsRecordType.A,
        dnsTtl: Duration.seconds(10),
      },
    });
    const scaling = this.service.autoScaleTaskCount({ minCapacity: cfg.gatewayCount, maxCapacity: cfg.gatewayMaxCount });
    scaling.scaleOnCpuUtilization('Cpu', {
      targetUtilizationPercent: 60,
      scaleInCooldown: Duration.minutes(5),
      scaleOutCooldown: Duration.minutes(1),
    });

    this.alb = new elbv2.ApplicationLoadBalancer(this, 'Alb', {
      vpc: props.network.vpc,
      internetFacing: true,
      vpcSubnets: { subnetType: ec2.SubnetType.PUBLIC },
      securityGroup: props.network.albSg,
      dropInvalidHeaderFields: true,
      deletionProtection: cfg.deletionProtection,
      // WebSocket streams ping every 30 s (ws_ping_interval_secs): 60 s keeps them open.
      idleTimeout: Duration.seconds(ALB_IDLE_TIMEOUT_SECS),
    });
    this.alb.logAccessLogs(props.storage.accessLogBucket, 'alb');

    this.targetGroup = new elbv2.ApplicationTargetGroup(this, 'Targets', {
      vpc: props.network.vpc,
      port: GATEWAY_PORT,
      protocol: elbv2.ApplicationProtocol.HTTP,
      targetType: elbv2.TargetType.IP,
      targets: [this.service],
      // ECS sends SIGTERM only after the ALB drained the task this long; the gateway's own
      // 30 s shutdown grace (within the 40 s stop timeout) then finishes what is in flight.
      deregistrationDelay: Duration.seconds(25),
      healthCheck: {
        path: HEALTH_CHECK_PATH,
        healthyHttpCodes: '200',
        interval: Duration.seconds(15),
        timeout: Duration.seconds(5),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 3,
      },
    });

    const https = this.alb.addListener('Https', {
      port: 443,
      protocol: elbv2.ApplicationProtocol.HTTPS,
      certificates: [elbv2.ListenerCertificate.fromArn(cfg.certificateArn)],
      sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
      open: false,
      defaultTargetGroups: [this.targetGroup],
    });
    // The gateway's Prometheus endpoint is for a scraper inside the VPC, never the internet
    // (docs/api.md#authentication): the ALB answers 404 for it.
    https.addAction('HideMetrics', {
      priority: 10,
      conditions: [elbv2.ListenerCondition.pathPatterns(['/metrics', '/metrics/*'])],
      action: elbv2.ListenerAction.fixedResponse(404, {
        contentType: 'application/json',
        messageBody: '{"error":"not_found","message":"no such route"}',
      }),
    });
    if (cfg.jwtIssuer && cfg.jwksEndpoint) {
      // Verify first, then forward: the L2 listener has no JWT action yet, so the actions are
      // written as CloudFormation properties.
      (https.node.defaultChild as elbv2.CfnListener).addPropertyOverride('DefaultActions', [
        { Type: 'jwt-validation', Order: 1, JwtValidationConfig: { Issuer: cfg.jwtIssuer, JwksEndpoint: cfg.jwksEndpoint } },
        { Type: 'forward', Order: 2, TargetGroupArn: this.targetGroup.targetGroupArn },
      ]);
    } else if (cfg.gatewayJwt === 'off') {
      Annotations.of(this).addWarningV2(
        'tributary:api-open',
        'the API accepts requests without a token: keep gatewayJwt=hmac, set jwksEndpoint, or narrow ingressCidrs (docs/aws.md)',
      );
    }

    this.alb.addListener('Http', {
      port: 80,
      protocol: elbv2.ApplicationProtocol.HTTP,
      open: false,
      defaultAction: elbv2.ListenerAction.redirect({ protocol: 'HTTPS', port: '443', permanent: true }),
    });
    skipChecks(props.network.albSg, {
      CKV_AWS_260: 'port 80 only answers a permanent redirect to HTTPS (the Http listener); it serves nothing',
    });

    const stack = Stack.of(this);
    new CfnOutput(stack, 'ApiUrl', {
      value: `https://${this.alb.loadBalancerDnsName}/api/v1`,
      description: 'Point your DNS name (the certificate\'s) at the ALB with a CNAME or alias record',
    });
    new CfnOutput(stack, 'AlbDnsName', { value: this.alb.loadBalancerDnsName });
  }

  /** The gateway's [gateway] jwt_* settings for the chosen mode: the HMAC secret never as plain text. */
  private authSettings(cfg: TributaryConfig, services: Services) {
    const environment: Record<string, string> = {};
    const secrets: Record<string, ecs.Secret> = {};
    if (cfg.gatewayJwt === 'hmac') {
      this.jwtSecret = new secretsmanager.Secret(this, 'JwtSecret', {
        secretName: `${cfg.name}/gateway-jwt`,
        description: 'HMAC key that signs and verifies the API\'s JWTs (HS256): {"secret"}',
        encryptionKey: services.platformKey,
        removalPolicy: RemovalPolicy.RETAIN,
        generateSecretString: {
          secretStringTemplate: JSON.stringify({}),
          generateStringKey: 'secret',
          // 64 letters and digits: 380 bits, above the gateway's 32-byte minimum.
          passwordLength: 64,
          excludePunctuation: true,
        },
      });
      secrets.TRIBUTARY_GATEWAY__JWT_SECRET = ecs.Secret.fromSecretsManager(this.jwtSecret, 'secret');
    } else if (cfg.gatewayJwt === 'public-key') {
      environment.TRIBUTARY_GATEWAY__JWT_PUBLIC_KEY = cfg.jwtPublicKey!;
    }
    if (cfg.gatewayJwt !== 'off') {
      if (cfg.jwtIssuer) environment.TRIBUTARY_GATEWAY__JWT_ISSUER = cfg.jwtIssuer;
      if (cfg.jwtAudience) environment.TRIBUTARY_GATEWAY__JWT_AUDIENCE = cfg.jwtAudience;
    }
    return { environment, secrets };
  }
}
