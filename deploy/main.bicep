// openface-blob-service on Azure Container Apps.
//
// Deploys, into one resource group:
//   - two user-assigned managed identities, the only credentials the apps use
//     (storage accepts no account keys), each with AcrPull on the registry:
//       web identity:    read blobs of every container; write and add blobs in the
//                        job-records container only; add messages to the job queue
//                        and read its properties (readiness);
//       worker identity: read, write and add blobs in every container (results go
//                        under processed/ of the upload's container, records into the
//                        records container); receive, update, delete and add messages
//                        on the job queue and read its properties (also what KEDA's
//                        scale rule uses); add messages to the poison queue.
//     Neither may delete a blob, and neither may create, delete or restore a container:
//     the storage roles are custom roles with exactly those permissions (see "roles");
//   - the storage account with blob and container soft delete, its job queue (+ poison
//     queue) and job-records container, and a lifecycle rule that deletes job records
//     and their by-container markers jobRecordDays after their last change;
//   - a Container Apps environment with Log Analytics;
//   - the web app (external ingress on 8000, /healthz liveness, /readyz readiness;
//     Prometheus metrics on 9100, reachable only inside the environment);
//   - the worker app (scaled 0..N by KEDA's azure-queue scaler on the job queue;
//     an internal-only ingress on 9100 for its Prometheus metrics);
//   - optionally (functionAppResourceId set), the Event Grid system topic of the storage
//     account and the subscription that sends uploads to the trigger function.
// Both apps run the same image: `bin/web` and `bin/worker`.
//
// az deployment group create -g <rg> -f deploy/main.bicep \
//   -p acrName=<registry> image=<registry>.azurecr.io/openface-blob-service:<tag> apiKeys=<key1,key2>
// See deploy/README.md and docs/operations.md.

targetScope = 'resourceGroup'

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Prefix of resource names (lower-case letters and digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'openface'

@description('Existing Azure Container Registry (same resource group) that holds the image.')
param acrName string

@description('Full image reference of the service image, e.g. myacr.azurecr.io/openface-blob-service:1.0.0.')
param image string

@description('Comma-separated API keys accepted by the web app (stored as a Container Apps secret). Each key has at least 32 characters.')
@secure()
param apiKeys string

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageAccountName string = '${namePrefix}${uniqueString(resourceGroup().id)}'

@description('Job queue: the web app enqueues, the worker dequeues, KEDA scales on its length.')
param jobQueueName string = 'openface-jobs'

@description('Container of job records (JOB_RECORDS_CONTAINER).')
param jobRecordsContainerName string = 'openface-jobs'

@description('Regular expression every upload container name must match in full (UPLOAD_CONTAINER_PATTERN). The default: one lower-case UUID per upload. Empty: no pattern.')
param uploadContainerPattern string = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'

@description('Days after its last change that a job record (and its by-container marker) is deleted by the lifecycle rule.')
@minValue(1)
param jobRecordDays int = 30

@description('Days a deleted blob or container (or the previous content of an overwritten blob) can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = 14

@description('Queued jobs per worker replica. A replica batches up to BATCH_MAX_MESSAGES (32) jobs over its cores, so a new one pays only for a longer queue.')
@minValue(1)
param jobsPerWorker int = 16

@description('Upper bound of worker replicas.')
@minValue(1)
param workerMaxReplicas int = 10

@description('Seconds a worker may spend finishing its job after SIGTERM (WORKER_SHUTDOWN_GRACE_SECONDS); the job is handed back after that.')
param workerShutdownGraceSeconds int = 240

@description('Seconds Container Apps waits after SIGTERM before SIGKILL. Must exceed workerShutdownGraceSeconds.')
param workerTerminationGracePeriodSeconds int = 300

@description('vCPU and memory of a worker replica (OpenFace is CPU-bound).')
param workerCpu string = '2.0'
param workerMemory string = '4Gi'

@description('LOG_LEVEL of both apps.')
param logLevel string = 'INFO'

@description('Resource ID of the function app that runs the upload trigger (function_trigger/). Empty: no Event Grid subscription is made here.')
param functionAppResourceId string = ''

@description('Name of the trigger function in that app.')
param functionName string = 'on_media_uploaded'

var roleIds = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}
var webPort = 8000
// Prometheus metrics of both apps: WEB_METRICS_PORT (web) and METRICS_PORT (worker).
var metricsPort = 9100
var poisonQueueName = '${jobQueueName}-poison'
var deadLetterContainerName = 'eventgrid-deadletter'
var withUploadTrigger = !empty(functionAppResourceId)
// Custom role names are unique in the tenant: this suffix ties them to this resource group.
var roleNameSuffix = '(${namePrefix}, ${uniqueString(resourceGroup().id)})'

// ---------------------------------------------------------------- identities

resource webIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-web-id'
  location: location
}

resource workerIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-worker-id'
  location: location
}

// ---------------------------------------------------------------- storage

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Microsoft Entra ID (the managed identities) only: no keys, no SAS.
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A deleted blob, and the previous content of an overwritten one, can be restored
    // for this long; so can a deleted container.
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
  }
}

resource jobRecordsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: jobRecordsContainerName
}

// Job records (<id>.json) and markers (by-container/<container>/<id>) expire: deleted
// jobRecordDays after their last change. Only the records container matches the prefix.
// With soft delete on, a deleted record stays restorable for softDeleteRetentionDays.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-job-records'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${jobRecordsContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: jobRecordDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    jobRecordsContainer
  ]
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource jobQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: jobQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueueName
}

// ---------------------------------------------------------------- roles
//
// Custom roles, assignable in this resource group only, that hold exactly the storage
// operations the apps call. Permission names follow Azure Storage's table "Permissions
// for calling data operations" (Microsoft Entra authorization). No role here holds
// blobs/delete, containers/write (create, restore, lease a container) or
// containers/delete, so neither app can delete a blob or a container.

resource blobReaderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'blob-reader')
  properties: {
    roleName: 'OpenFace blob reader ${roleNameSuffix}'
    description: 'Read blobs and container properties. No user delegation keys (no SAS), no writes.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          // Get Container Properties: the readiness check on the records container.
          'Microsoft.Storage/storageAccounts/blobServices/containers/read'
        ]
        notActions: []
        dataActions: [
          // List Blobs, Get Blob, Get Blob Properties / Metadata.
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'
        ]
        notDataActions: []
      }
    ]
  }
}

resource blobWriterRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'blob-writer')
  properties: {
    roleName: 'OpenFace blob writer ${roleNameSuffix}'
    description: 'Create and overwrite blobs (and their metadata). No delete.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: [
          // Put Blob, Put Block, Put Block List, Set Blob Metadata: overwriting a record
          // or a result needs write.
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'
          // Put Blob of a new blob (records and markers are created with If-None-Match: *).
          'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'
        ]
        notDataActions: []
      }
    ]
  }
}

resource queueSenderRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'queue-sender')
  properties: {
    roleName: 'OpenFace queue sender ${roleNameSuffix}'
    description: 'Add messages to a queue and read its properties. No receive, peek or delete.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          // Get Queue Metadata (queue properties): the readiness check. The built-in
          // Storage Queue Data Message Sender lacks it.
          'Microsoft.Storage/storageAccounts/queueServices/queues/read'
        ]
        notActions: []
        dataActions: [
          // Put Message.
          'Microsoft.Storage/storageAccounts/queueServices/queues/messages/add/action'
        ]
        notDataActions: []
      }
    ]
  }
}

resource queueProcessorRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'queue-processor')
  properties: {
    roleName: 'OpenFace queue processor ${roleNameSuffix}'
    description: 'Receive, peek, update, delete and add messages of a queue and read its properties. No clear, no queue delete.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          // Get Queue Metadata: the approximate length (worker metric, KEDA's scale rule)
          // and the worker's start-up check.
          'Microsoft.Storage/storageAccounts/queueServices/queues/read'
        ]
        notActions: []
        dataActions: [
          // Peek Messages: KEDA's azure-queue scaler peeks (up to 32) in some versions
          // and with its visibleonly strategy.
          'Microsoft.Storage/storageAccounts/queueServices/queues/messages/read'
          // Get Messages (receive) and Delete Message (a job done or dead-lettered).
          'Microsoft.Storage/storageAccounts/queueServices/queues/messages/process/action'
          // Update Message: extend or release a lease (visibility timeout).
          'Microsoft.Storage/storageAccounts/queueServices/queues/messages/write'
          // Put Message: a job queued again for a retry (write allows it too; listed so
          // the role still says so on its own).
          'Microsoft.Storage/storageAccounts/queueServices/queues/messages/add/action'
        ]
        notDataActions: []
      }
    ]
  }
}

// Who holds what, at which scope (the table in deploy/README.md says the same).
// Role assignment names are GUIDs of scope, identity and role: the same on every run.
// A custom role is named by its ID at subscription level, like a built-in one.

// web: reads blobs of any container (uploads are listed; records read). Account scope.
resource webBlobRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, webIdentity.id, blobReaderRole.id)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobReaderRole.name)
    principalId: webIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'web: list and read blobs'
  }
}

// web: writes job records and markers. The records container only: the web cannot
// write an upload container.
resource webRecordsWrite 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobRecordsContainer.id, webIdentity.id, blobWriterRole.id)
  scope: jobRecordsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobWriterRole.name)
    principalId: webIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'web: write job records'
  }
}

// web: enqueues jobs and reads the queue's properties. The job queue only.
resource webQueueSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobQueue.id, webIdentity.id, queueSenderRole.id)
  scope: jobQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueSenderRole.name)
    principalId: webIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'web: enqueue jobs'
  }
}

// worker: reads media of any upload container and the records. Account scope.
resource workerBlobRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, workerIdentity.id, blobReaderRole.id)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobReaderRole.name)
    principalId: workerIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'worker: read media and records'
  }
}

// worker: writes results under processed/ of any upload container, and records. Account
// scope: upload containers are made per upload, and a role cannot name a blob prefix.
resource workerBlobWrite 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, workerIdentity.id, blobWriterRole.id)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobWriterRole.name)
    principalId: workerIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'worker: write results and records'
  }
}

// worker (and KEDA's scale rule, which runs as the worker identity): the job queue only.
resource workerQueueProcess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobQueue.id, workerIdentity.id, queueProcessorRole.id)
  scope: jobQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueProcessorRole.name)
    principalId: workerIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'worker: receive, renew, delete and requeue jobs; queue length'
  }
}

// worker: moves jobs to the poison queue. Adding messages is all it does there, and the
// built-in Storage Queue Data Message Sender is exactly that.
resource workerPoisonSend 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, workerIdentity.id, roleIds.storageQueueDataMessageSender)
  scope: poisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataMessageSender)
    principalId: workerIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'worker: poison jobs'
  }
}

// ---------------------------------------------------------------- registry

resource acr 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: acrName
}

resource webAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acr.id, webIdentity.id, roleIds.acrPull)
  scope: acr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: webIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource workerAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acr.id, workerIdentity.id, roleIds.acrPull)
  scope: acr
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: workerIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// ---------------------------------------------------------------- upload events (optional)
//
// BlobCreated events of the storage account go to the trigger function. The account may
// have one system topic only: do not also create one with `az eventgrid
// event-subscription create` (function_trigger/README.md) when this is on.

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (withUploadTrigger) {
  parent: blobService
  name: deadLetterContainerName
}

resource uploadEvents 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (withUploadTrigger) {
  name: '${namePrefix}-uploads'
  location: location
  // Its own identity writes dead-lettered events; nothing else uses it.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Event Grid writes dead-lettered events as blobs. Storage Blob Data Contributor is the
// role Event Grid documents for a dead-letter container; it is given on that one
// container only (it includes deleting that container, which holds nothing else).
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (withUploadTrigger) {
  name: guid(deadLetterContainer.id, uploadEvents.id, roleIds.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: uploadEvents.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Event Grid: dead-lettered upload events'
  }
}

resource uploadSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = if (withUploadTrigger) {
  parent: uploadEvents
  name: 'media-uploaded'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppResourceId}/functions/${functionName}'
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      // Never the service's own blobs: job records, dead-lettered events (a function
      // failing every call would otherwise feed itself), and results under processed/.
      // The function skips them again (JOB_RECORDS_CONTAINER, UPLOAD_CONTAINER_PATTERN).
      advancedFilters: [
        {
          operatorType: 'StringNotBeginsWith'
          key: 'subject'
          values: [
            '/blobServices/default/containers/${jobRecordsContainerName}/'
            '/blobServices/default/containers/${deadLetterContainerName}/'
          ]
        }
        {
          operatorType: 'StringNotContains'
          key: 'subject'
          values: [
            '/blobs/processed/'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 10
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
  dependsOn: [
    deadLetterWriter
  ]
}

// ---------------------------------------------------------------- environment

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource environment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: '${namePrefix}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

// Settings both apps share (names are fields of analysis.config.Settings). CREATE_STORAGE
// is not set: the apps create no container or queue, this template does. Each app adds
// AZURE_CLIENT_ID, which DefaultAzureCredential reads to pick its user-assigned identity.
var uploadPatternEnv = empty(uploadContainerPattern) ? [] : [
  {
    name: 'UPLOAD_CONTAINER_PATTERN'
    value: uploadContainerPattern
  }
]
var commonEnv = concat([
  {
    name: 'AZURE_STORAGE_ACCOUNT_URL'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'JOB_QUEUE_NAME'
    value: jobQueueName
  }
  {
    name: 'JOB_RECORDS_CONTAINER'
    value: jobRecordsContainerName
  }
  {
    name: 'LOG_LEVEL'
    value: logLevel
  }
  {
    // Said in the 404 of a job whose record the lifecycle rule deleted.
    name: 'JOB_RECORD_DAYS'
    value: string(jobRecordDays)
  }
], uploadPatternEnv)

// ---------------------------------------------------------------- web app

resource web 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${namePrefix}-web'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${webIdentity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: webPort
        transport: 'auto'
        allowInsecure: false
        // Prometheus metrics (gunicorn's master on WEB_METRICS_PORT): an extra port that
        // only apps inside the environment reach. The public port has no /metrics.
        additionalPortMappings: [
          {
            external: false
            targetPort: metricsPort
          }
        ]
      }
      registries: [
        {
          server: acr.properties.loginServer
          identity: webIdentity.id
        }
      ]
      secrets: [
        {
          name: 'api-keys'
          value: apiKeys
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'web'
          image: image
          command: [
            'bin/web'
          ]
          env: concat(commonEnv, [
            {
              name: 'AZURE_CLIENT_ID'
              value: webIdentity.properties.clientId
            }
            {
              name: 'API_KEYS'
              secretRef: 'api-keys'
            }
            {
              name: 'PORT'
              value: string(webPort)
            }
            {
              name: 'WEB_METRICS_PORT'
              value: string(metricsPort)
            }
          ])
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: webPort
              }
              initialDelaySeconds: 5
              periodSeconds: 10
              timeoutSeconds: 3
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: webPort
              }
              initialDelaySeconds: 5
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
        }
      ]
      // gunicorn's graceful_timeout is 20 s.
      terminationGracePeriodSeconds: 30
      scale: {
        minReplicas: 1
        maxReplicas: 5
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '50'
              }
            }
          }
        ]
      }
    }
  }
  dependsOn: [
    webBlobRead
    webRecordsWrite
    webQueueSend
    webAcrPull
  ]
}

// ---------------------------------------------------------------- worker app

resource worker 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${namePrefix}-worker'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${workerIdentity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      // Internal only (external: false): the worker serves nothing but its Prometheus
      // metrics (METRICS_PORT), for a scraper inside the environment. It opens the port
      // once storage answers; Container Apps' default TCP probes watch it.
      ingress: {
        external: false
        targetPort: metricsPort
        transport: 'http'
        allowInsecure: false
      }
      registries: [
        {
          server: acr.properties.loginServer
          identity: workerIdentity.id
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'worker'
          image: image
          command: [
            'bin/worker'
          ]
          env: concat(commonEnv, [
            {
              name: 'AZURE_CLIENT_ID'
              value: workerIdentity.properties.clientId
            }
            {
              name: 'WORKER_SHUTDOWN_GRACE_SECONDS'
              value: string(workerShutdownGraceSeconds)
            }
            {
              name: 'METRICS_PORT'
              value: string(metricsPort)
            }
          ])
          resources: {
            cpu: json(workerCpu)
            memory: workerMemory
          }
        }
      ]
      // SIGTERM (scale-in, new revision) -> the job finishes or is handed back -> exit.
      terminationGracePeriodSeconds: workerTerminationGracePeriodSeconds
      scale: {
        minReplicas: 0
        maxReplicas: workerMaxReplicas
        rules: [
          {
            // KEDA's azure-queue scaler, as the worker identity: it reads the queue's
            // approximate length (Get Queue Metadata) and, in some versions, peeks.
            // Its default strategy ("all") counts in-flight (invisible) messages too,
            // so replicas busy with a job are not scaled in just because nothing is
            // waiting. This is the only scale rule: requests to the metrics port do not
            // scale the worker.
            name: 'job-queue'
            azureQueue: {
              accountName: storage.name
              queueName: jobQueueName
              queueLength: jobsPerWorker
              identity: workerIdentity.id
            }
          }
        ]
      }
    }
  }
  dependsOn: [
    workerBlobRead
    workerBlobWrite
    workerQueueProcess
    workerPoisonSend
    workerAcrPull
    jobRecordsContainer
  ]
}

output webUrl string = 'https://${web.properties.configuration.ingress.fqdn}'
output storageAccountName string = storage.name
output webIdentityClientId string = webIdentity.properties.clientId
output workerIdentityClientId string = workerIdentity.properties.clientId
output workerAppName string = worker.name
