// The container registries, in a stack of their own that is deployed first: the services of
// the main stack cannot start before their images are pushed, and a registry cannot receive an
// image before it exists.
//
//   tributary          the repository's Dockerfile (gateway, registry, processor, topics apply)
//   tributary-connect  Kafka Connect 4.3.1 with the Snowflake sink plugin (docs/aws.md)
//
// Tags are immutable (a tag always names the image that was tested), images are scanned on
// push, encrypted with KMS, and only the newest 50 of each repository are kept. Deleting the
// stack keeps the repositories and their images.
import { Duration, RemovalPolicy, Stack, StackProps } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import { Construct } from 'constructs';
import { TributaryConfig } from './config';

export interface ImagesStackProps extends StackProps {
  readonly config: TributaryConfig;
}

export class ImagesStack extends Stack {
  readonly tributary: ecr.Repository;
  readonly connect: ecr.Repository;
  /** Plain names (not tokens), for the platform stack to find the repositories by. */
  readonly tributaryName: string;
  readonly connectName: string;

  constructor(scope: Construct, id: string, props: ImagesStackProps) {
    super(scope, id, props);
    const repository = (repoId: string, repositoryName: string) =>
      new ecr.Repository(this, repoId, {
        repositoryName,
        imageTagMutability: ecr.TagMutability.IMMUTABLE,
        imageScanOnPush: true,
        encryption: ecr.RepositoryEncryption.KMS,
        removalPolicy: RemovalPolicy.RETAIN,
        lifecycleRules: [
          { description: 'drop untagged layers of failed pushes', tagStatus: ecr.TagStatus.UNTAGGED, maxImageAge: Duration.days(7), rulePriority: 1 },
          { description: 'keep the newest 50 images', tagStatus: ecr.TagStatus.ANY, maxImageCount: 50, rulePriority: 2 },
        ],
      });
    this.tributaryName = props.config.name;
    this.connectName = `${props.config.name}-connect`;
    this.tributary = repository('Tributary', this.tributaryName);
    this.connect = repository('Connect', this.connectName);
  }
}
